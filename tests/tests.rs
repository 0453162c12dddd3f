//! End-to-end tests: they run the real `fanout` binary and check its
//! output, messages and exit codes.

mod util;

mod azure;
mod bench;
mod datasets_gen;
mod external;
mod faults;
mod job_errors;
mod lifetime;
mod messy_data;
mod oracles;
mod plan;
mod remote;
mod report;
mod resume_guards;
mod run;
mod serve;
mod simulate;
mod storage;
mod stream;
mod stream_faas;
mod stream_failures;
mod stream_sinks;
mod stream_sources;
mod stream_windows;
mod sweep;

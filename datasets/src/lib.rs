//! Input data for fanout: listing, record-aligned splitting, readers,
//! writers and deterministic generators.
//!
//! A [`Dataset`] is a set of input files (paths, directories or globs,
//! local or in object storage: see [`store`]) of one [`Format`]. It yields
//! [`Split`]s lazily — byte ranges that start and end on record boundaries
//! for text, csv and jsonl, row-group ranges for parquet, batch ranges for
//! Arrow IPC, whole files when compressed — and
//! reads each split as Arrow [`RecordBatch`](arrow_array::RecordBatch)es.
//! Reading every split in order yields exactly the records of reading every
//! file whole, whatever the chunk size.
//!
//! ```
//! use fanout_datasets::{Dataset, DatasetOptions, Format};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("words.txt");
//! std::fs::write(&path, "a b\nc\nd e f\n")?;
//! let opts = DatasetOptions { chunk_size: 4, ..DatasetOptions::default() };
//! let ds = Dataset::open(vec![path.display().to_string()], opts)?;
//! assert_eq!(ds.format(), Format::Text);
//! let rows: usize = ds.read_all().map(|b| b.unwrap().num_rows()).sum();
//! assert_eq!((ds.splits().count(), rows), (2, 3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bad;
mod blob;
pub mod csv;
mod csv_infer;
mod dataset;
mod error;
mod format;
pub mod generator;
mod ipc;
mod json_infer;
mod json_text;
mod jsonl;
mod kept;
pub mod listing;
mod open_files;
mod parquet;
mod salvage;
pub mod split;
pub mod store;
pub mod text;
mod writer;

pub use crate::csv::CsvOptions;
pub use bad::{BadRecord, BadRecords, Encoding, MaxBad, OnBadRecord, RAW_LIMIT};
pub use dataset::{Batches, Dataset, DatasetOptions, Summary};
pub use error::{Error, Location, Result};
pub use format::{Compression, Format, UnknownFormat};
pub use json_infer::{is_json_text, json_text_field};
pub use json_text::{infer_json_schema, json_reader, json_writer};
pub use listing::InputFile;
pub use open_files::{OpenFiles, split_bytes};
pub use split::{ChunkSize, Split, SplitRange};
pub use store::{RequestCounts, Storage};
pub use writer::Writer;

//! Inputs, outputs and shuffles in Azure Blob Storage (`az://`), against
//! Azurite, Microsoft's own emulator (npm, pinned in
//! tests/fixtures/azurite, which tests/setup.sh installs), with Azure's own Python
//! SDK (PyPI `azure-storage-blob`) putting the data in and checking what
//! fanout left. fanout reaches it as users reach Azurite:
//! `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::storage::{
    COUNTS, SUMS, big_csv, http_table, killed_commits, same_table, shuffle_job, wide_csv, words_and_their_count,
};
use crate::util::{Run, Scratch, python, summary};

/// Azurite's well-known development account key.
const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob service with the container `data`, killed when dropped.
struct Azurite {
    _server: crate::util::Daemon,
    url: String,
}

impl Azurite {
    fn start(s: &Scratch) -> Azurite {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bin = crate::util::root().join("tests/fixtures/azurite/node_modules/.bin/azurite-blob");
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--inMemoryPersistence"])
            .args(["--skipApiVersionCheck", "--silent"])
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} ({e}): tests/setup.sh installs it with npm ci", bin.display()));
        let addr = format!("127.0.0.1:{port}");
        let azurite = Azurite { _server: crate::util::Daemon(child), url: format!("http://{addr}") };
        assert!(crate::util::wait_for(60, || TcpStream::connect(&addr).is_ok()), "Azurite did not start");
        azurite.sdk(s, "svc.create_container('data')");
        azurite
    }

    /// The environment that points object_store (and so fanout) at it.
    fn env(&self) -> [(&str, &str); 2] {
        [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", &self.url)]
    }

    /// Runs `fanout ARGS` in the scratch directory with that environment.
    fn fanout(&self, s: &Scratch, args: &[&str]) -> Run {
        crate::util::run_with(s.dir.path(), args, &self.env())
    }

    /// Runs Python with the SDK's service client `svc` and the container
    /// client `c` of `data`.
    fn sdk(&self, s: &Scratch, script: &str) {
        let script = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             svc = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
             AccountKey={KEY};BlobEndpoint={}/devstoreaccount1;')\nc = svc.get_container_client('data')\n{script}\nprint('ok')\n",
            self.url
        );
        python(s, &script);
    }
}

#[test]
fn az_inputs_outputs_and_shuffles_give_what_local_files_give() {
    let s = Scratch::new();
    let az = Azurite::start(&s);
    let expected = words_and_their_count(&s);
    // A csv with quoted fields across lines, in parts, and a text larger
    // than one upload part (8 MiB), made by Python's standard library.
    python(
        &s,
        "import csv, random\nrandom.seed(3)\n\
         for i in range(3):\n    with open(f'part-{i}.csv', 'w', newline='') as f:\n        w = csv.writer(f)\n        w.writerow(['id', 'note'])\n\
         \x20       w.writerows([(j, random.choice(['a', 'b\\nc', 'd,\"e\"'])) for j in range(i * 1000, i * 1000 + 1000)])\n\
         open('big.txt', 'w').write(''.join('line %d %s\\n' % (i, 'x' * random.randint(0, 60)) for i in range(260000)))\nprint('ok')",
    );
    az.sdk(&s, "for n in ['part-0.csv', 'part-1.csv', 'part-2.csv', 'big.txt']:\n    c.upload_blob(n, open(n, 'rb'))");
    for (input, local, output) in
        [("part-*.csv", "parts.csv", "out/parts.csv"), ("big.txt", "big-out.csv", "out/big.csv")]
    {
        let job = |path: &str, out: &str| {
            format!(
                "[input]\npath = \"{path}\"\nchunk_size = \"64KiB\"\n[output]\npath = \"{out}\"\nmode = \"overwrite\"\n"
            )
        };
        s.write("local.toml", job(input, local));
        s.run(&["run", "local.toml"]).expect(0);
        s.write("az.toml", job(&format!("az://data/{input}"), &format!("az://data/{output}")));
        let r = summary(&az.fanout(&s, &["run", "az.toml", "--json"]).expect(0));
        assert!(r["storage"]["get"].as_u64().unwrap() > 0, "{r}");
        az.sdk(
            &s,
            &format!(
                "assert c.download_blob('{output}').readall() == open('{local}', 'rb').read(), '{output} differs'\n\
                 assert c.get_blob_client('{output}.manifest.json').exists()\n\
                 committed, uncommitted = c.get_blob_client('{output}').get_block_list('all')\n\
                 assert '{output}' != 'out/big.csv' or len(committed) >= 2, ('went up in one PUT', committed)\n\
                 assert not uncommitted, uncommitted"
            ),
        );
    }
    // A keyed stage on a `fanout serve` host shuffles through az:// too.
    let empty = tempfile::tempdir().unwrap();
    let host = crate::remote::Host::start_with(empty.path(), None, "127.0.0.1", &["--concurrency", "8"], &az.env());
    let urls = [host.url("word_count")];
    let (map, reduce) = (http_table(&urls, COUNTS), http_table(&[host.url("aggregate")], SUMS));
    s.write("shuffle.toml", shuffle_job(Some(&map), Some(&reduce), "[storage]\nscratch = \"az://data/tmp/\"\n"));
    let r = summary(&az.fanout(&s, &["run", "shuffle.toml", "--json"]).expect(0));
    assert!(std::fs::read(s.path("out.csv")).unwrap() == expected, "the output differs from the local run's");
    assert!(r["shuffle_scratch_bytes"].as_u64().unwrap() > 0, "{r}");
    az.sdk(&s, "left = list(c.list_blobs(name_starts_with='tmp/'))\nassert not left, left");
    // A job that fails leaves no blob.
    s.write("bad.csv", "id,n\n1,2\n3\n");
    az.sdk(&s, "c.upload_blob('bad.csv', open('bad.csv', 'rb'))");
    s.write("bad.toml", "[input]\npath = \"az://data/bad.csv\"\n[output]\npath = \"az://data/out/bad.csv\"\n");
    let r = az.fanout(&s, &["run", "bad.toml"]).expect(1);
    assert!(r.stderr.contains("az://data/bad.csv"), "{}", r.stderr);
    az.sdk(&s, "assert not c.get_blob_client('out/bad.csv').exists()");
}

#[test]
fn an_az_output_killed_mid_commit_is_finished_by_its_resume() {
    let s = Scratch::new();
    let az = Azurite::start(&s);
    big_csv(&s);
    // Killed with its blocks up but not committed, and with the blob
    // committed but not its manifest.
    let points = ["PUT:comp=blocklist", "PUT:.manifest.json"];
    let env = |url: &str| {
        az.env()
            .iter()
            .map(|(k, v)| (k.to_string(), if *k == "AZURITE_BLOB_STORAGE_URL" { url } else { v }.to_string()))
            .collect()
    };
    let resumed = killed_commits(&s, "az", &az.url, &env, &points);
    for ((key, sum), point) in resumed.iter().zip(points) {
        // One whole blob, committed in blocks, none left uncommitted,
        // stamped by its run, with its manifest.
        az.sdk(
            &s,
            &format!(
                "import json, xxhash\nb = c.get_blob_client('{key}')\nbody = b.download_blob().readall()\n\
                 assert body == open('big-out.csv', 'rb').read(), '{point}: the blob differs'\n\
                 committed, uncommitted = b.get_block_list('all')\n\
                 assert len(committed) == 2 and not uncommitted, ('{point}', committed, uncommitted)\n\
                 assert b.get_blob_properties().metadata['fanoutrun'].startswith('rd-'), '{point}: not stamped'\n\
                 m = json.loads(c.download_blob('{key}.manifest.json').readall())\n\
                 assert m['output']['bytes'] == len(body) and m['output']['xxh3'] == xxhash.xxh3_64_hexdigest(body), m\n\
                 assert m['run_id'] == '{run}', m",
                run = sum["run_id"].as_str().unwrap()
            ),
        );
        if point == "PUT:.manifest.json" {
            let st = &sum["storage"];
            assert_eq!(st["put"], 1, "{point}: the blob went up again: {st}");
        }
    }
}

#[test]
fn az_outputs_of_every_format_go_up_in_blocks_and_read_back() {
    let s = Scratch::new();
    let az = Azurite::start(&s);
    wide_csv(&s);
    for format in ["parquet", "arrow", "jsonl"] {
        let local = format!("wide-out.{format}");
        let job =
            |out: &str| format!("[input]\npath = \"wide.csv\"\nchunk_size = \"4MiB\"\n[output]\npath = \"{out}\"\n");
        s.write("local.toml", job(&local));
        s.run(&["run", "local.toml"]).expect(0);
        let key = format!("out/wide.{format}");
        s.write("az.toml", job(&format!("az://data/{key}")));
        az.fanout(&s, &["run", "az.toml"]).expect(0);
        az.sdk(
            &s,
            &format!(
                "b = c.get_blob_client('{key}')\nbody = b.download_blob().readall()\n\
                 assert body == open('{local}', 'rb').read(), '{format}: the blob differs'\n\
                 committed, uncommitted = b.get_block_list('all')\n\
                 assert len(committed) >= 2 and not uncommitted, ('{format}', committed, uncommitted)\n{}",
                same_table(format, &local)
            ),
        );
    }
}

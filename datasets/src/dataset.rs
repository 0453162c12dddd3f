//! A dataset: resolved inputs, a format, a schema, and lazy splits over them.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::bad::{BadRecords, LineIndex, OnBadRecord};
use crate::csv::{self, CsvOptions};
use crate::error::{Error, Location, Result};
use crate::format::{Compression, Format};
use crate::listing::{self, InputFile};
use crate::open_files::{KeptCsv, OpenFiles, WINDOW, WindowReader, open_range, open_whole};
use crate::split::{self, ChunkSize, Split, SplitRange};
use crate::store::Storage;
use crate::{ipc, jsonl, parquet, text};

/// A stream of record batches read from one split.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// How to split and read a dataset.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// The format; `None` tells it from the first file's extension.
    pub format: Option<Format>,
    /// Target split size in bytes (record-aligned, so splits vary a little).
    pub chunk_size: u64,
    /// With a size, splits' target sizes spread from `chunk_size` up to it
    /// (a calibration run's: see [`ChunkSize`]).
    pub chunk_size_max: Option<u64>,
    /// The CSV dialect, for csv inputs.
    pub csv: CsvOptions,
    /// A schema for csv and jsonl inputs; `None` infers one from a sample.
    pub schema: Option<SchemaRef>,
    /// Rows per record batch handed to functions.
    pub batch_rows: usize,
    /// Records sampled from the first file to infer a csv or jsonl schema.
    pub infer_rows: usize,
    /// What to do with records that cannot be read (see
    /// [`Dataset::read_salvaging`]).
    pub bad: BadRecords,
    /// How to reach inputs in object storage, and the requests made.
    pub storage: Arc<Storage>,
}

impl DatasetOptions {
    /// The splits' target sizes.
    pub fn chunks(&self) -> ChunkSize {
        let min = self.chunk_size.max(1);
        ChunkSize { min, max: self.chunk_size_max.unwrap_or(min).max(min) }
    }
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            format: None,
            chunk_size: 16 << 20,
            chunk_size_max: None,
            csv: CsvOptions::default(),
            schema: None,
            batch_rows: 8192,
            infer_rows: 1000,
            bad: BadRecords::default(),
            storage: Arc::default(),
        }
    }
}

/// A set of input files of one format and schema, split lazily into
/// record-aligned chunks.
///
/// ```no_run
/// use fanout_datasets::{Dataset, DatasetOptions};
///
/// let ds = Dataset::open(vec!["logs/*.jsonl".into()], DatasetOptions::default())?;
/// for split in ds.splits() {
///     let split = split?;
///     for batch in ds.read(&split)? {
///         println!("{}: {} rows", split, batch?.num_rows());
///     }
/// }
/// # Ok::<(), fanout_datasets::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Dataset {
    inputs: Vec<String>,
    pub(crate) format: Format,
    /// Whether the format was given rather than told from extensions.
    explicit: bool,
    pub(crate) opts: DatasetOptions,
    /// The schema of the batches read: the files' own, or its projection.
    pub(crate) schema: SchemaRef,
    /// The files' schema and, when only some columns are read, which.
    pub(crate) full: SchemaRef,
    pub(crate) projection: Option<Vec<usize>>,
    /// Line numbers of offsets, for bad records.
    pub(crate) lines: LineIndex,
}

impl Dataset {
    /// Resolves `inputs` (files, directories, globs): tells the format from
    /// the first file unless given, and reads or infers the schema from it.
    pub fn open(inputs: Vec<String>, opts: DatasetOptions) -> Result<Dataset> {
        if inputs.is_empty() {
            return Err(Error::Config("no input paths given".into()));
        }
        let first =
            listing::list(&inputs, &opts.storage).next().expect("a non-empty input list yields a file or an error")?;
        let format = match opts.format {
            Some(f) => f,
            None => Format::from_path(&first.path).ok_or_else(|| {
                Error::invalid(
                    &first.path,
                    format!(
                        "cannot tell the format from the file name; set the format to one of: {}",
                        Format::known_names()
                    ),
                )
            })?,
        };
        if opts.schema.is_some() && !matches!(format, Format::Csv | Format::Jsonl) {
            return Err(Error::Config(format!(
                "a schema can only be given for csv and jsonl inputs; {format} files carry their own"
            )));
        }
        // Records the job skips are skipped in the sample too.
        let skip_bad = opts.bad.on_bad != OnBadRecord::Fail;
        let schema = match (&opts.schema, format) {
            (Some(s), _) => s.clone(),
            (None, Format::Text) => text::schema(),
            (None, Format::Csv) => {
                let source = open_whole(&first)?;
                Arc::new(
                    crate::csv_infer::infer_schema(source, &opts.csv, opts.infer_rows, skip_bad)
                        .map_err(|m| Error::invalid(&first.path, format!("cannot infer a csv schema: {m}")))?,
                )
            }
            (None, Format::Jsonl) => {
                let source = open_whole(&first)?;
                match jsonl::infer_schema(source, opts.infer_rows, skip_bad) {
                    Ok(schema) => Arc::new(schema),
                    Err(m) => {
                        // Name the line that stopped inference, if one did.
                        let bad = open_whole(&first).ok().and_then(|s| jsonl::first_invalid(s, opts.infer_rows));
                        return Err(match bad {
                            Some((line, byte, message)) => {
                                malformed(&first, &SplitRange::Whole, byte, Some(line), message)
                            }
                            None => Error::invalid(&first.path, format!("cannot infer a json schema: {m}")),
                        });
                    }
                }
            }
            (None, Format::Parquet) => parquet::schema(&first)?,
            (None, Format::Arrow) => ipc::schema(&first)?,
        };
        let full = schema.clone();
        let explicit = opts.format.is_some();
        Ok(Dataset { inputs, format, explicit, opts, schema, full, projection: None, lines: LineIndex::default() })
    }

    /// The same dataset read for the columns named `columns` only (in the
    /// files' order): the readers skip parsing the others — a value that
    /// would not parse in a skipped column is never seen. None when that
    /// would read every column (or none), or for text, which has one.
    pub fn project(&self, columns: &[String]) -> Result<Option<Dataset>> {
        let mut indices = Vec::with_capacity(columns.len());
        for c in columns {
            let i = self.full.index_of(c).map_err(|_| Error::Config(format!("no input column `{c}` to read")))?;
            indices.push(i);
        }
        indices.sort_unstable();
        indices.dedup();
        let all = indices.len() == self.full.fields().len();
        if indices.is_empty() || all || self.format == Format::Text || self.projection.is_some() {
            return Ok(None);
        }
        let schema = Arc::new(self.full.project(&indices).map_err(|e| Error::Config(e.to_string()))?);
        Ok(Some(Dataset { schema, projection: Some(indices), ..self.clone() }))
    }

    /// Whether jsonl records are read strictly (a field the schema lacks
    /// is an error): when the schema was inferred and is read whole.
    pub(crate) fn json_strict(&self) -> bool {
        self.opts.schema.is_none() && self.projection.is_none()
    }

    /// The files' own schema, whatever the projection.
    pub fn file_schema(&self) -> SchemaRef {
        self.full.clone()
    }

    /// The columns read, as indices into the files' schema (None: all).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// The format of every file.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The schema of every batch read.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The options the dataset was opened with.
    pub fn options(&self) -> &DatasetOptions {
        &self.opts
    }

    /// The input files, lazily and in order.
    pub fn files(&self) -> impl Iterator<Item = Result<InputFile>> + Send + '_ {
        listing::list(&self.inputs, &self.opts.storage)
    }

    /// All splits, lazily: files are listed and split one at a time. The
    /// iterator stops after the first error.
    pub fn splits(&self) -> impl Iterator<Item = Result<Split>> + Send + '_ {
        self.splits_noting(|_| Ok(()))
    }

    /// All splits, as [`Dataset::splits`], calling `listed` with each file
    /// as it is listed, before its splits (a file may have none); an error
    /// it returns ends the splits.
    pub fn splits_noting<'a>(
        &'a self,
        mut listed: impl FnMut(&InputFile) -> Result<()> + Send + 'a,
    ) -> impl Iterator<Item = Result<Split>> + Send + 'a {
        let mut files = self.files();
        let mut current: Option<(Arc<InputFile>, FileSplits)> = None;
        let mut index = 0;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            loop {
                if let Some((file, ranges)) = &mut current {
                    match ranges.next() {
                        Some(Ok(range)) => {
                            index += 1;
                            return Some(Ok(Split { index: index - 1, file: file.clone(), range }));
                        }
                        Some(Err(e)) => {
                            failed = true;
                            return Some(Err(e));
                        }
                        None => current = None,
                    }
                }
                let next = files.next()?.and_then(|f| {
                    listed(&f)?;
                    let ranges = self.split_file(&f)?;
                    Ok((Arc::new(f), ranges))
                });
                match next {
                    Ok(c) => current = Some(c),
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                }
            }
        })
    }

    /// The splits of one file.
    fn split_file(&self, file: &InputFile) -> Result<FileSplits> {
        let path = &file.path;
        if !self.explicit
            && let Some(f) = Format::from_path(path).filter(|&f| f != self.format)
        {
            return Err(Error::invalid(
                path,
                format!("is {f}, but the dataset is {}; set the format to read every file as one", self.format),
            ));
        }

        let chunk = self.opts.chunks();
        if file.compression != Compression::None {
            if !self.format.is_line_based() {
                return Err(Error::invalid(path, format!("{} files cannot be compressed as a whole", self.format)));
            }
            return Ok(Box::new(std::iter::once(Ok(SplitRange::Whole))));
        }
        let bytes = |r: Result<(u64, u64)>| r.map(|(offset, len)| SplitRange::Bytes { offset, len });
        match self.format {
            Format::Text | Format::Jsonl => Ok(Box::new(split::Lines::splitter(file, chunk)?.map(bytes))),
            Format::Csv => {
                let (splits, header) = csv::Records::splitter(file, chunk, self.opts.csv, true)?;
                if self.opts.csv.header && !header.is_empty() {
                    self.check_header(path, &header)?;
                }
                Ok(Box::new(splits.map(bytes)))
            }
            Format::Parquet => {
                self.check_schema(path, parquet::schema(file)?)?;
                let groups = split::group_units(parquet::row_group_sizes(file)?, chunk);
                Ok(Box::new(groups.map(|(start, end, bytes)| Ok(SplitRange::RowGroups { start, end, bytes }))))
            }
            Format::Arrow => {
                self.check_schema(path, ipc::schema(file)?)?;
                let groups = split::group_units(ipc::batch_sizes(file)?, chunk);
                Ok(Box::new(groups.map(|(start, end, bytes)| Ok(SplitRange::Batches { start, end, bytes }))))
            }
        }
    }

    fn check_header(&self, path: &Path, header: &[u8]) -> Result<()> {
        let names = crate::csv_infer::header_names(header, &self.opts.csv).map_err(|m| Error::invalid(path, m))?;
        let expected: Vec<&String> = self.full.fields().iter().map(|f| f.name()).collect();
        if names.iter().ne(expected.iter().copied()) {
            return Err(Error::invalid(
                path,
                format!("header {names:?} differs from the dataset's columns {expected:?}"),
            ));
        }
        Ok(())
    }

    fn check_schema(&self, path: &Path, schema: SchemaRef) -> Result<()> {
        if schema.fields() != self.full.fields() {
            return Err(Error::invalid(path, format!("schema {schema} differs from the first file's {}", self.full)));
        }
        Ok(())
    }

    /// Reads the records of `split` as a stream of batches.
    pub fn read(&self, split: &Split) -> Result<Batches> {
        self.read_with(split, &mut OpenFiles::default())
    }

    /// Reads all of `split`, as [`Dataset::read_with`] does, into a vector
    /// — a small split straight into it, with no iterator in between.
    pub fn read_all_with(&self, split: &Split, files: &mut OpenFiles) -> Result<Vec<RecordBatch>> {
        match self.read_small(split, files)? {
            Some(batches) => batches,
            None => self.read_stream(split, files)?.collect(),
        }
    }

    /// A small split read at once from the read-ahead window: text lines
    /// that fit one batch, or csv records decoded with the worker's kept
    /// decoder. `None` for any other split (or when the kept decoder
    /// fails: the split is then read the usual way, for the error).
    fn read_small(&self, split: &Split, files: &mut OpenFiles) -> Result<Option<Result<Vec<RecordBatch>>>> {
        let SplitRange::Bytes { offset, len } = split.range else { return Ok(None) };
        if len > WINDOW / 4 {
            return Ok(None);
        }
        match self.format {
            Format::Text => {
                let (bytes, from, to) = files.window(&split.file, offset, len)?;
                Ok(text::whole(&bytes[from..to], self.batch_rows(&split.range)).map(|r| match r {
                    Ok(batch) => Ok(batch.into_iter().collect()),
                    Err(e) => Err(malformed(&split.file, &split.range, e.byte, Some(e.line), e.message)),
                }))
            }
            Format::Csv => Ok(self.small_csv(&split.file, offset, len, files)?.map(Ok)),
            _ => Ok(None),
        }
    }

    /// Reads `split`, reusing a file handle that `files` kept from an
    /// earlier split of the same file (a worker reading many small splits
    /// of one file opens it once).
    pub fn read_with(&self, split: &Split, files: &mut OpenFiles) -> Result<Batches> {
        match self.read_small(split, files)? {
            Some(Ok(batches)) => Ok(Box::new(batches.into_iter().map(Ok))),
            Some(Err(e)) => Ok(Box::new(std::iter::once(Err(e)))),
            None => self.read_stream(split, files),
        }
    }

    /// Rows per batch for a split of `range`. A split of `len` bytes holds
    /// at most `len + 1` records: decoders size their buffers to the
    /// batch, and a tiny split's need not be the 8,192 rows' (zeroed, per
    /// split).
    pub(crate) fn batch_rows(&self, range: &SplitRange) -> usize {
        match *range {
            SplitRange::Bytes { len, .. } => {
                self.opts.batch_rows.min(usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1))
            }
            _ => self.opts.batch_rows,
        }
        .max(1)
    }

    /// Reads `split` as a stream of batches (not the small-split path).
    fn read_stream(&self, split: &Split, files: &mut OpenFiles) -> Result<Batches> {
        let file = split.file.clone();
        let path = file.path.clone();
        let range = split.range.clone();
        let batch_rows = self.batch_rows(&range);
        let schema = self.schema.clone();
        // Read buffers fit the split: a tiny split needs no megabyte.
        let buffer = match range {
            SplitRange::Bytes { len, .. } => (len as usize).saturating_add(1).min(1 << 20),
            _ => 1 << 20,
        };
        match (self.format, &range) {
            (_, SplitRange::RowGroups { start, end, .. }) => {
                let batches = parquet::read(&file, *start, *end, batch_rows, self.projection.as_deref())?;
                let at = split.to_string();
                Ok(Box::new(fuse_errors(
                    batches.map(move |r| r.map_err(|m| Error::invalid(&path, format!("{at}: {m}")))),
                )))
            }
            (_, SplitRange::Batches { start, end, .. }) => {
                let batches = ipc::read(&file, *start, *end, self.projection.clone())?;
                let at = split.to_string();
                Ok(Box::new(fuse_errors(
                    batches.map(move |r| r.map_err(|m| Error::invalid(&path, format!("{at}: {m}")))),
                )))
            }
            (Format::Text, &SplitRange::Bytes { offset, len }) if len <= WINDOW / 4 => {
                // A small split of more lines than a batch: from the window.
                let (bytes, from, to) = files.window(&file, offset, len)?;
                let lines = text::Lines::new(WindowReader { bytes, at: from, end: to }, batch_rows, buffer);
                Ok(Box::new(fuse_errors(
                    lines.map(move |r| r.map_err(|e| malformed(&file, &range, e.byte, Some(e.line), e.message))),
                )))
            }
            (Format::Text, _) => {
                let lines = text::Lines::new(files.open(&file, &range)?, batch_rows, buffer);
                Ok(Box::new(fuse_errors(
                    lines.map(move |r| r.map_err(|e| malformed(&file, &range, e.byte, Some(e.line), e.message))),
                )))
            }
            (Format::Csv, _) => {
                let opts = self.opts.csv;
                let skip_header = opts.header && range == SplitRange::Whole;
                let full = self.full.clone();
                let projection = self.projection.clone();
                let batches = csv::read(
                    files.open(&file, &range)?,
                    full.clone(),
                    projection,
                    &opts,
                    skip_header,
                    batch_rows,
                    buffer,
                )
                .map_err(|m| Error::invalid(&path, m))?;
                Ok(Box::new(fuse_errors(batches.map(move |r| {
                    r.map_err(|message| {
                        let located = open_range(&file, &range).ok().and_then(|a| {
                            let b = open_range(&file, &range).ok()?;
                            csv::locate(a, b, full.clone(), &opts, skip_header)
                        });
                        // Located, the decoder's own line numbers (counted
                        // from its first record, not the file's) would
                        // contradict the location: they go.
                        match located {
                            Some((byte, line)) => {
                                malformed(&file, &range, byte, Some(line), csv::csv_message(&message))
                            }
                            None => malformed(&file, &range, 0, None, message),
                        }
                    })
                }))))
            }
            (Format::Jsonl, _) => {
                let strict = self.json_strict();
                let batches = jsonl::read(files.open(&file, &range)?, schema.clone(), strict, batch_rows, buffer)
                    .map_err(|m| Error::invalid(&path, m))?;
                Ok(Box::new(fuse_errors(batches.map(move |r| {
                    r.map_err(|message| {
                        let located =
                            open_range(&file, &range).ok().and_then(|s| jsonl::locate(s, schema.clone(), strict));
                        match located {
                            Some((line, byte, precise)) => malformed(&file, &range, byte, Some(line), precise),
                            None => malformed(&file, &range, 0, None, message),
                        }
                    })
                }))))
            }
            (Format::Parquet | Format::Arrow, _) => unreachable!("parquet and arrow splits are unit ranges"),
        }
    }

    /// Decodes a small csv split from the read-ahead window with the
    /// worker's kept decoder. `None` when that cannot be done — the split
    /// does not end with a newline (the end of a file), or the decoder
    /// failed (it is dropped, and the caller reads the split again the
    /// usual way, for an error that names the record).
    fn small_csv(
        &self,
        file: &InputFile,
        offset: u64,
        len: u64,
        files: &mut OpenFiles,
    ) -> Result<Option<Vec<RecordBatch>>> {
        // Only a split the splitter cut, at the end of a record: the end of
        // the file may be inside an unterminated quote, which would leave
        // the decoder in the middle of a field.
        if offset + len >= file.size {
            return Ok(None);
        }
        let (bytes, from, to) = files.window(file, offset, len)?;
        let data = &bytes[from..to];
        if data.last() != Some(&b'\n') {
            return Ok(None);
        }
        let batch_rows = self.opts.batch_rows.max(1);
        let mut kept = match files.csv.take() {
            Some(k)
                if Arc::ptr_eq(&k.schema, &self.full)
                    && k.projection == self.projection
                    && k.csv == self.opts.csv
                    && k.batch_rows == batch_rows =>
            {
                k
            }
            _ => KeptCsv {
                decoder: csv::decoder(self.full.clone(), self.projection.clone(), &self.opts.csv, batch_rows),
                schema: self.full.clone(),
                projection: self.projection.clone(),
                csv: self.opts.csv,
                batch_rows,
            },
        };
        match csv::decode_records(&mut kept.decoder, data) {
            Ok(batches) => {
                files.csv = Some(kept);
                Ok(Some(batches))
            }
            Err(_) => Ok(None),
        }
    }

    /// Counts files, bytes and splits, streaming: nothing is held per file
    /// or per split, so a dataset of 100,000 files and millions of splits
    /// is summarized in constant memory.
    pub fn summary(&self) -> Result<Summary> {
        let mut sum = Summary::default();
        for file in self.files() {
            sum.files += 1;
            sum.bytes += file?.size;
        }
        for split in self.splits() {
            let bytes = split?.bytes();
            sum.min_split = if sum.splits == 0 { bytes } else { sum.min_split.min(bytes) };
            sum.max_split = sum.max_split.max(bytes);
            sum.splits += 1;
        }
        Ok(sum)
    }

    /// Reads every split in order: the whole dataset as one stream, which
    /// ends after the first error.
    pub fn read_all(&self) -> impl Iterator<Item = Result<RecordBatch>> + Send + '_ {
        fuse_errors(self.splits().flat_map(move |split| -> Batches {
            match split.and_then(|s| self.read(&s)) {
                Ok(batches) => batches,
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }))
    }
}

/// Totals over a dataset, from [`Dataset::summary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Input files.
    pub files: u64,
    /// Their total size on disk.
    pub bytes: u64,
    /// Splits.
    pub splits: u64,
    /// The smallest split, in bytes.
    pub min_split: u64,
    /// The largest split, in bytes.
    pub max_split: u64,
}

/// The range iterator of one file.
type FileSplits = Box<dyn Iterator<Item = Result<SplitRange>> + Send>;

/// Ends a stream after its first error (readers cannot resume after one).
fn fuse_errors<T>(it: impl Iterator<Item = Result<T>> + Send) -> impl Iterator<Item = Result<T>> + Send {
    let mut failed = false;
    it.take_while(move |r| {
        let go = !failed;
        failed |= r.is_err();
        go
    })
}

/// A malformed-record error at `byte` and 0-based `line` of the stream of
/// `range`, located in the file.
fn malformed(file: &InputFile, range: &SplitRange, byte: u64, line: Option<u64>, message: String) -> Error {
    let location = match range {
        SplitRange::Bytes { offset, .. } => Location { line: split::line_at(file, offset + byte), byte: offset + byte },
        _ => Location { line: line.map(|l| l + 1), byte },
    };
    Error::Malformed { path: file.path.clone(), location, message }
}

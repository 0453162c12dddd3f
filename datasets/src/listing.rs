//! Listing inputs: files, directories and globs, expanded lazily.
//!
//! An input list is expanded one entry at a time, in order; a directory is
//! walked recursively with its entries sorted by name, and a glob yields its
//! matches in the glob crate's (sorted, per-directory) order. The order is
//! deterministic, so split and task ids are stable from run to run. Hidden
//! files (names starting with `.`) found by walking a directory are skipped.
//! Only one directory listing is held at a time, so 100,000 input files cost
//! no more memory than one.
//!
//! An entry that is a URL (`s3://bucket/prefix/*.csv`) is listed in its
//! object store instead (see [`crate::store`]): one object, every object
//! under a prefix, or those a glob matches, in key order.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::format::Compression;
use crate::store::{self, Object, Storage, block_on, io_error, object_error, split_url};

/// One input file, as found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Its path, as listed (relative paths stay relative).
    pub path: PathBuf,
    /// Its size in bytes on disk.
    pub size: u64,
    /// Its compression codec, told from the file name.
    pub compression: Compression,
    /// The object holding it, when it is in object storage (its `path` is
    /// then the URL).
    pub object: Option<Object>,
    /// What tells this version of it from another of the same size: its
    /// modification time (nanoseconds since the epoch) for a file; its
    /// ETag, else its version, else its modification time for an object.
    /// Empty where the store gives none.
    pub version: String,
}

impl InputFile {
    /// Describes the file at `path`, which must exist and be a file.
    pub fn stat(path: impl Into<PathBuf>) -> Result<InputFile> {
        let path = path.into();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Err(Error::invalid(&path, "not a regular file"));
        }
        let version = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(String::new, |d| d.as_nanos().to_string());
        Ok(InputFile { compression: Compression::from_path(&path), size: meta.len(), path, object: None, version })
    }

    /// Describes the file or object `name` names (a path or a URL).
    pub fn open(name: &str, storage: &Storage) -> Result<InputFile> {
        if !store::is_url(name) || name.starts_with("file://") {
            return InputFile::stat(store::local_path(name));
        }
        let object = storage.object(name)?;
        let meta = store::block_on(object_store::ObjectStoreExt::head(&*object.store, &object.key))
            .map_err(|e| store::object_error(name, e))?;
        let path = PathBuf::from(name);
        let version = version(&meta);
        Ok(InputFile {
            compression: Compression::from_path(&path),
            size: meta.size,
            path,
            object: Some(object),
            version,
        })
    }

    /// Whether the file is in object storage.
    pub fn is_remote(&self) -> bool {
        self.object.is_some()
    }
}

/// Whether `s` holds glob metacharacters.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Lists the files named by `inputs` (files, directories or globs, local
/// or in object storage), lazily and in a deterministic order. An entry
/// that matches nothing is an error naming it.
pub fn list<'a>(inputs: &'a [String], storage: &'a Storage) -> impl Iterator<Item = Result<InputFile>> + Send + 'a {
    inputs.iter().flat_map(move |input| expand(input, storage))
}

/// Expands one input entry.
fn expand<'a>(input: &'a str, storage: &'a Storage) -> Box<dyn Iterator<Item = Result<InputFile>> + Send + 'a> {
    if store::is_url(input) && !input.starts_with("file://") {
        return match objects(storage, input) {
            Ok(files) => Box::new(files.into_iter().map(Ok)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
    }
    let input = store::local_path(input);
    if is_glob(input) {
        let paths = match glob::glob(input) {
            Ok(paths) => paths,
            Err(e) => {
                return Box::new(std::iter::once(Err(Error::BadPattern {
                    pattern: input.to_string(),
                    message: e.to_string(),
                })));
            }
        };
        let files = paths.filter_map(|entry| match entry {
            Ok(path) if path.is_dir() => None,
            Ok(path) => Some(InputFile::stat(path)),
            Err(e) => {
                let path = e.path().to_path_buf();
                Some(Err(Error::io(path, e.into())))
            }
        });
        return Box::new(non_empty(files, input));
    }
    let path = Path::new(input);
    if path.is_dir() {
        let files = walkdir::WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|entry| match entry {
                Ok(e) if e.file_type().is_dir() => None,
                Ok(e) => Some(InputFile::stat(e.into_path())),
                Err(e) => {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                    let io = e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                    Some(Err(Error::io(path, io)))
                }
            });
        return Box::new(non_empty(files, input));
    }
    if !path.exists() {
        return Box::new(std::iter::once(Err(Error::NoMatch { pattern: input.to_string() })));
    }
    Box::new(std::iter::once(InputFile::stat(path)))
}

/// The input files an object URL names: one object, every object under
/// it as a prefix (a "directory"), or those a glob in its key matches,
/// in key order. Hidden names (a part starting with `.`) under a prefix
/// are skipped, as a local directory's are.
pub(crate) fn objects(storage: &Storage, input: &str) -> Result<Vec<InputFile>> {
    let (base, key) = split_url(input)?;
    let glob = is_glob(key);
    let no_match = || Error::NoMatch { pattern: input.to_string() };
    // A bucket's root, or a key ending in `/`, is a prefix only.
    if !glob && !key.ends_with('/') && !key.is_empty() {
        let object = storage.object(input)?;
        match block_on(object.store.head(&object.key)) {
            Ok(meta) => return Ok(vec![input_file(base, &object, meta)]),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(object_error(input, e)),
        }
    }
    // The literal part of the key before its first wildcard, up to a `/`.
    let literal = match key.find(['*', '?', '[']) {
        Some(i) => &key[..key[..i].rfind('/').map_or(0, |j| j + 1)],
        None => key,
    };
    let pattern = glob
        .then(|| glob::Pattern::new(key))
        .transpose()
        .map_err(|e| Error::BadPattern { pattern: input.to_string(), message: e.to_string() })?;
    let prefix = Key::parse(literal.trim_end_matches('/')).map_err(|e| Error::invalid(input, e))?;
    let object = storage.object_at(base, input, prefix.clone())?;
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    let mut files = Vec::new();
    let mut listing = object.store.list(Some(&prefix));
    while let Some(meta) = block_on(listing.next()) {
        let meta = meta.map_err(|e| match base.starts_with("http") {
            // A web server lists nothing unless it speaks WebDAV.
            true => Error::invalid(
                input,
                format!(
                    "a glob or prefix of an http(s) URL needs a server that lists its files (WebDAV's PROPFIND), \
                     and this one did not: name each file in `path` ({})",
                    io_error(e)
                ),
            ),
            false => object_error(input, e),
        })?;
        let name = meta.location.as_ref();
        let keep = match &pattern {
            Some(p) => p.matches_with(name, options),
            None => {
                let under = name.get(prefix.as_ref().len()..).unwrap_or(name);
                !under.split('/').any(|part| part.starts_with('.'))
            }
        };
        if keep {
            files.push(input_file(base, &object, meta));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(no_match());
    }
    Ok(files)
}

/// The input file of an object found by a listing.
fn input_file(base: &str, listed: &Object, meta: object_store::ObjectMeta) -> InputFile {
    let path = PathBuf::from(format!("{base}/{}", meta.location));
    let version = version(&meta);
    let (key, size) = (meta.location, meta.size);
    let object =
        Object { store: listed.store.clone(), key, requests: listed.requests.clone(), kept: listed.kept.clone() };
    InputFile { compression: Compression::from_path(&path), size, path, object: Some(object), version }
}

/// What tells one version of an object from another: its ETag, else its
/// version, else its modification time.
pub(crate) fn version(meta: &object_store::ObjectMeta) -> String {
    (meta.e_tag.clone().or_else(|| meta.version.clone()))
        .unwrap_or_else(|| meta.last_modified.timestamp_nanos_opt().unwrap_or_default().to_string())
}

/// Passes `files` through, or yields a `NoMatch` error if it is empty.
fn non_empty<'a>(
    files: impl Iterator<Item = Result<InputFile>> + Send + 'a,
    pattern: &'a str,
) -> impl Iterator<Item = Result<InputFile>> + Send + 'a {
    let mut seen = false;
    let mut done = false;
    let mut files = files;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match files.next() {
            Some(item) => {
                seen = true;
                Some(item)
            }
            None => {
                done = true;
                (!seen).then(|| Err(Error::NoMatch { pattern: pattern.to_string() }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, content: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn lists_files_dirs_and_globs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "b.txt", "bb");
        touch(d, "a.txt", "a");
        touch(d, "sub/c.txt", "ccc");
        touch(d, "sub/.hidden", "x");
        touch(d, "z.csv.gz", "x");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let inputs = vec![s(&d.join("sub")), format!("{}/*.txt", s(d)), s(&d.join("z.csv.gz"))];
        let files: Vec<InputFile> = list(&inputs, &Storage::default()).collect::<Result<_>>().unwrap();
        let names: Vec<String> = files.iter().map(|f| f.path.strip_prefix(d).unwrap().display().to_string()).collect();
        assert_eq!(names, ["sub/c.txt", "a.txt", "b.txt", "z.csv.gz"]);
        assert_eq!(files[0].size, 3);
        assert_eq!(files[3].compression, Compression::Gzip);
    }

    #[test]
    fn missing_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt").display().to_string();
        let err = list(std::slice::from_ref(&missing), &Storage::default()).next().unwrap().unwrap_err();
        assert_eq!(err.to_string(), format!("input `{missing}` matches no file"));
        let glob = format!("{}/*.csv", dir.path().display());
        let err = list(std::slice::from_ref(&glob), &Storage::default()).next().unwrap().unwrap_err();
        assert!(matches!(err, Error::NoMatch { .. }), "{err}");
        let bad = "[".to_string();
        let err = list(std::slice::from_ref(&bad), &Storage::default()).next().unwrap().unwrap_err();
        assert!(err.to_string().starts_with("invalid glob `[`"), "{err}");
    }
}

//! Files of lines that runs append to (the journal, failed tasks, the
//! input record): what makes a file cut short by a crash safe to append to
//! again.

use std::path::Path;

/// Cuts a file of lines back to its last whole line: a line cut short by
/// a crash is dropped before more are appended (else the first line
/// appended would join it, and neither would parse).
pub(crate) fn drop_torn_line(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Look back from the end for the last newline, a block at a time.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let whole = start + i as u64 + 1;
            return if whole < len { file.set_len(whole) } else { Ok(()) };
        }
        end = start;
    }
    file.set_len(0)
}

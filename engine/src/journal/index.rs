//! The lines of `journal.jsonl`, and the index a resumed run looks tasks
//! up in.
//!
//! A line names one saved output in `tasks.data` — its offset, length and
//! XXH3 checksum — and the tasks whose rows it holds, in order, as runs of
//! consecutive task ids with the same rows and input records (and bad
//! records, a fifth number when there are any):
//! `{"phase":0,"offset":0,"len":920,"xxh3":"…","tasks":[[64,32,1,1]]}` is
//! tasks 64 to 95 of phase 0, one row each, task 64's row first. A journal
//! of a million one-row tasks is a few MB, and a resumed run's index holds
//! a run, not a task. Lines of the earlier format (`"task"`, `"skip"`,
//! `"rows"`: one task each) are still read.

use serde::Deserialize;

/// One run of tasks in a line: the first task, how many, and the rows,
/// input records and bad input records of each.
pub(super) type TaskRun = [u64; 5];

/// A finished task as a line lists it: its id, rows, input records and
/// bad input records.
pub(super) type TaskLine = (u64, u64, u64, u64);

/// A line of `journal.jsonl`, either format.
#[derive(Debug, Deserialize)]
struct Line {
    phase: usize,
    offset: u64,
    len: u64,
    xxh3: String,
    /// This format: the runs of tasks the saved output holds.
    #[serde(default)]
    tasks: Option<Vec<Vec<u64>>>,
    /// The earlier format: one task, and its rows of the saved output.
    #[serde(default)]
    task: Option<u64>,
    #[serde(default)]
    rows: u64,
    #[serde(default)]
    skip: u64,
    #[serde(default)]
    input: u64,
}

/// Appends the line of a saved output holding `tasks` (task, rows, input
/// records, in the order of their rows) to `out`.
/// `skip` is the rows of the saved output before the first task's (0 but
/// where a saved output's tasks need more than one line).
pub(super) fn write_line(
    out: &mut Vec<u8>,
    phase: usize,
    offset: u64,
    len: u64,
    xxh3: u64,
    skip: u64,
    tasks: impl Iterator<Item = TaskLine>,
) {
    let num = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.extend_from_slice(b"{\"phase\":");
    num(out, phase as u64);
    out.extend_from_slice(b",\"offset\":");
    num(out, offset);
    out.extend_from_slice(b",\"len\":");
    num(out, len);
    if skip > 0 {
        out.extend_from_slice(b",\"skip\":");
        num(out, skip);
    }
    out.extend_from_slice(format!(",\"xxh3\":\"{xxh3:016x}\",\"tasks\":[").as_bytes());
    let mut first = true;
    for run in runs(tasks) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'[');
        let n = if run[4] > 0 { 5 } else { 4 };
        for (i, &v) in run[..n].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            num(out, v);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}\n");
}

/// Tasks as runs of consecutive ids with the same rows, input and bad
/// input.
fn runs(tasks: impl Iterator<Item = TaskLine>) -> Vec<TaskRun> {
    let mut out: Vec<TaskRun> = Vec::new();
    for (task, rows, input, bad) in tasks {
        match out.last_mut() {
            Some(r) if r[0] + r[1] == task && r[2] == rows && r[3] == input && r[4] == bad => r[1] += 1,
            _ => out.push([task, 1, rows, input, bad]),
        }
    }
    out
}

/// Where a task's saved output is, and its part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The saved output: offset and length in `tasks.data`, checksum.
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) xxh3: u64,
    /// Rows of the saved output before the task's own.
    pub(super) skip: u64,
    /// The task's rows.
    pub(super) rows: u64,
    /// Records the task read from its split.
    pub(super) input: u64,
    /// Records of its split that could not be read (skipped or rejected).
    pub(super) bad: u64,
}

/// A run of tasks of one line, for lookups.
#[derive(Debug, Clone)]
struct Run {
    phase: usize,
    first: u64,
    count: u64,
    /// The line's position in the journal: a later line wins.
    line: usize,
    /// The saved output.
    saved: usize,
    /// Rows of the saved output before the run's first task's.
    skip: u64,
    rows: u64,
    input: u64,
    bad: u64,
}

/// The tasks a journal holds, as runs sorted by (phase, first task).
#[derive(Debug, Default)]
pub(super) struct Index {
    runs: Vec<Run>,
    /// Per saved output: offset, length, checksum.
    saved: Vec<(u64, u64, u64)>,
    /// The longest run, which bounds how far back a lookup looks.
    longest: u64,
}

impl Index {
    /// Reads the lines of a journal; those that do not parse (a line cut
    /// short by a crash) are left out.
    pub(super) fn read(lines: impl Iterator<Item = String>) -> Index {
        let mut index = Index::default();
        for (n, text) in lines.enumerate() {
            let Ok(line) = serde_json::from_str::<Line>(&text) else { continue };
            let Ok(xxh3) = u64::from_str_radix(&line.xxh3, 16) else { continue };
            let saved = index.saved.len();
            index.saved.push((line.offset, line.len, xxh3));
            let (runs, mut skip) = match (line.tasks, line.task) {
                (Some(runs), _) => (runs, line.skip),
                (None, Some(task)) => (vec![vec![task, 1, line.rows, line.input]], line.skip),
                (None, None) => continue,
            };
            for run in runs {
                let Some(&[first, count, rows, input]) = run.first_chunk() else { continue };
                let bad = run.get(4).copied().unwrap_or(0);
                if count == 0 {
                    continue;
                }
                index.longest = index.longest.max(count);
                index.runs.push(Run { phase: line.phase, first, count, line: n, saved, skip, rows, input, bad });
                skip += count * rows;
            }
        }
        index.runs.sort_by_key(|r| (r.phase, r.first, r.line));
        index
    }

    /// Task `task` of phase `phase`, from the last line that holds it.
    pub(super) fn get(&self, phase: usize, task: u64) -> Option<Entry> {
        // Runs starting at or before the task; one that holds it starts at
        // most `longest` before it.
        let end = self.runs.partition_point(|r| (r.phase, r.first) <= (phase, task));
        let best = self.runs[..end]
            .iter()
            .rev()
            .take_while(|r| r.phase == phase && r.first + self.longest > task)
            .filter(|r| task < r.first + r.count)
            .max_by_key(|r| r.line)?;
        let (offset, len, xxh3) = self.saved[best.saved];
        Some(Entry {
            offset,
            len,
            xxh3,
            skip: best.skip + (task - best.first) * best.rows,
            rows: best.rows,
            input: best.input,
            bad: best.bad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> impl Iterator<Item = String> + '_ {
        std::str::from_utf8(text).unwrap().lines().map(String::from)
    }

    #[test]
    fn tasks_are_written_as_runs_and_found_one_by_one() {
        let mut out = Vec::new();
        // Tasks 4..8 with a row each, then 9 (not consecutive), 10 with
        // three rows, 11 with one.
        let tasks =
            [(4, 1, 1, 0), (5, 1, 1, 0), (6, 1, 1, 0), (7, 1, 1, 0), (9, 1, 1, 0), (10, 3, 2, 0), (11, 1, 1, 2)];
        write_line(&mut out, 1, 100, 50, 0xabc, 0, tasks.iter().copied());
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"phase\":1,\"offset\":100,\"len\":50,\"xxh3\":\"0000000000000abc\",\
             \"tasks\":[[4,4,1,1],[9,1,1,1],[10,1,3,2],[11,1,1,1,2]]}\n"
        );
        let index = Index::read(lines(&out));
        let entry = |skip, rows, input, bad| Some(Entry { offset: 100, len: 50, xxh3: 0xabc, skip, rows, input, bad });
        assert_eq!(index.get(1, 4), entry(0, 1, 1, 0));
        assert_eq!(index.get(1, 7), entry(3, 1, 1, 0));
        assert_eq!(index.get(1, 9), entry(4, 1, 1, 0));
        assert_eq!(index.get(1, 10), entry(5, 3, 2, 0));
        assert_eq!(index.get(1, 11), entry(8, 1, 1, 2));
        assert_eq!(index.get(1, 8), None);
        assert_eq!(index.get(1, 12), None);
        assert_eq!(index.get(0, 5), None);
    }

    #[test]
    fn a_later_line_wins_and_earlier_format_lines_are_read() {
        let mut out = Vec::new();
        write_line(&mut out, 0, 0, 10, 1, 0, (0..100).map(|t| (t, 2, 1, 0)));
        // Task 50 again, in a later line (redone after its bytes were lost),
        // after 5 rows of another phase's task.
        write_line(&mut out, 0, 10, 10, 2, 5, [(50, 7, 1, 0)].into_iter());
        out.extend_from_slice(
            b"{\"phase\":0,\"task\":200,\"offset\":20,\"len\":5,\"xxh3\":\"00000000000000ff\",\"rows\":3,\"skip\":4}\n",
        );
        out.extend_from_slice(b"{\"phase\":0,\"offset\":9"); // cut short by a crash
        let index = Index::read(lines(&out));
        assert_eq!(index.get(0, 49).unwrap().skip, 98);
        assert_eq!(index.get(0, 50), Some(Entry { offset: 10, len: 10, xxh3: 2, skip: 5, rows: 7, input: 1, bad: 0 }));
        assert_eq!(index.get(0, 51).unwrap().skip, 102);
        assert_eq!(
            index.get(0, 200),
            Some(Entry { offset: 20, len: 5, xxh3: 255, skip: 4, rows: 3, input: 0, bad: 0 })
        );
    }
}

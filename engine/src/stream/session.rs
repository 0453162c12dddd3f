//! Session windows (`window = { session = "30s" }`): per key, a session
//! holds records less than the gap apart; it ends a gap after its last
//! record. A record starts a session, joins the open one it falls in, or
//! merges the open ones it bridges; it is late when it joins no open
//! session and its own would have ended at or before the watermark.
//! Sessions the watermark has passed are closed; they are committed
//! together by the bucket of `gap` their end falls in, as one file
//! `sessions-<bucket start>`, once the watermark passes the bucket's end —
//! by then no session can end in it any more, so a replay writes the same
//! file. Like the windows' partials, each session's partials are kept by
//! the coordinator under the session's id.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use super::window::window_start;

/// One session of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The key, in arrow-row form, as hex.
    pub(crate) key: String,
    /// Its first record's time, epoch ms.
    pub(crate) start: i64,
    /// Its last record's time plus the gap.
    pub(crate) end: i64,
}

/// The sessions not committed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    /// By id.
    pub(crate) open: BTreeMap<i64, Session>,
    /// The id the next session gets.
    pub(crate) next_id: i64,
}

/// Where a batch's rows went.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Rows by the session they are in, once merges are done.
    pub(crate) sessions: BTreeMap<i64, Vec<u32>>,
    /// Sessions merged into another: (merged, into), in order.
    pub(crate) merged: Vec<(i64, i64)>,
    /// Late rows.
    pub(crate) late: Vec<u32>,
}

impl Sessions {
    /// Places rows with `times` and `keys` (each row's key, hex) in
    /// sessions of `gap_ms`, the watermark `mark` being that before each
    /// row: `marks[i]`.
    pub(crate) fn place(&mut self, times: &[i64], keys: &[String], marks: &[Option<i64>], gap_ms: i64) -> Placed {
        let mut placed = Placed::default();
        let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
        for (id, s) in &self.open {
            by_key.entry(s.key.clone()).or_default().push(*id);
        }
        // Owned keys of sessions made in this batch.
        let mut made: Vec<(String, i64)> = Vec::new();
        let mut row_session: Vec<Option<i64>> = vec![None; times.len()];
        for (row, (&t, key)) in times.iter().zip(keys).enumerate() {
            let mark = marks[row];
            let ids: Vec<i64> = by_key
                .get(key.as_str())
                .into_iter()
                .flatten()
                .copied()
                .chain(made.iter().filter(|(k, _)| k == key).map(|(_, id)| *id))
                .filter(|id| {
                    let s = &self.open[id];
                    // Open (not yet passed by the watermark), and overlapping.
                    mark.is_none_or(|m| s.end > m) && s.start < t + gap_ms && t < s.end
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if ids.is_empty() && mark.is_some_and(|m| t + gap_ms <= m) {
                placed.late.push(row as u32);
                continue;
            }
            let (mut start, mut end) = (t, t + gap_ms);
            for id in &ids {
                let s = &self.open[id];
                start = start.min(s.start);
                end = end.max(s.end);
            }
            let into = match ids.first() {
                Some(&first) => first,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    made.push((key.clone(), id));
                    id
                }
            };
            for &other in &ids[ids.len().min(1)..] {
                self.open.remove(&other);
                placed.merged.push((other, into));
                made.retain(|(_, id)| *id != other);
                if let Some(list) = by_key.get_mut(key.as_str()) {
                    list.retain(|id| *id != other);
                }
            }
            self.open.insert(into, Session { key: key.clone(), start, end });
            row_session[row] = Some(into);
        }
        // Rows of sessions merged later in the batch follow them.
        let follow = |mut id: i64| {
            while let Some(&(_, into)) = placed.merged.iter().find(|(from, _)| *from == id) {
                id = into;
            }
            id
        };
        for (row, session) in row_session.iter().enumerate() {
            if let Some(id) = session {
                placed.sessions.entry(follow(*id)).or_default().push(row as u32);
            }
        }
        placed
    }

    /// The buckets of `gap_ms` that the watermark `mark` has passed, with
    /// the sessions that end in them (all of them when `mark` is none: the
    /// stream is ending), removed from the open ones.
    pub(crate) fn due(&mut self, mark: Option<i64>, gap_ms: i64) -> BTreeMap<i64, Vec<(i64, Session)>> {
        let mut out: BTreeMap<i64, Vec<(i64, Session)>> = BTreeMap::new();
        let ids: Vec<i64> = (self.open.iter())
            .filter(|(_, s)| mark.is_none_or(|m| window_start(s.end, gap_ms) + gap_ms <= m))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let s = self.open.remove(&id).expect("listed above");
            out.entry(window_start(s.end, gap_ms)).or_default().push((id, s));
        }
        out
    }
}

/// Each row's key (the columns `names` of `batch`), in arrow-row form as
/// hex: equal keys, equal text.
pub(crate) fn row_keys(batch: &RecordBatch, names: &[String]) -> Result<Vec<String>, String> {
    use std::fmt::Write;
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let column =
            batch.column_by_name(name).ok_or_else(|| format!("the key column `{name}` is not in the records"))?;
        columns.push(column.clone());
    }
    let fields = columns.iter().map(|c| SortField::new(c.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
    let rows = converter.convert_columns(&columns).map_err(|e| e.to_string())?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let mut hex = String::with_capacity(rows.row(i).as_ref().len() * 2);
            for b in rows.row(i).as_ref() {
                let _ = write!(hex, "{b:02x}");
            }
            hex
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn records_less_than_the_gap_apart_share_a_session_and_a_bridge_merges_two() {
        let mut s = Sessions::default();
        // Key a at 0 s and 15 s (two sessions, gap 10 s), key b at 5 s.
        let p = s.place(&[0, 15_000, 5_000], &keys(&["a", "a", "b"]), &[None, None, None], 10_000);
        assert_eq!(p.sessions.len(), 3);
        assert!(p.late.is_empty());
        // 12 s joins [15, 25) only: 12 s after a's record at 0 s.
        let p = s.place(&[12_000], &keys(&["a"]), &[None], 10_000);
        assert!(p.merged.is_empty());
        // 8 s bridges a's two sessions: [0, 10) and [12, 25) become [0, 25).
        let p = s.place(&[8_000], &keys(&["a"]), &[None], 10_000);
        assert_eq!(p.merged.len(), 1);
        let a: Vec<&Session> = s.open.values().filter(|x| x.key == "a").collect();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].start, a[0].end), (0, 25_000));
        assert_eq!(p.sessions.keys().copied().collect::<Vec<_>>(), [p.merged[0].1]);
    }

    #[test]
    fn a_record_is_late_only_when_it_joins_no_open_session() {
        let mut s = Sessions::default();
        s.place(&[100_000], &keys(&["a"]), &[None], 10_000);
        // The watermark at 105 s: 90 s joins nothing and its own session
        // would end at 100 s: late. 96 s joins a's open session.
        let p = s.place(&[90_000, 96_000], &keys(&["a", "a"]), &[Some(105_000), Some(105_000)], 10_000);
        assert_eq!(p.late, [0]);
        assert_eq!(s.open.values().next().map(|x| (x.start, x.end)), Some((96_000, 110_000)));
    }

    #[test]
    fn sessions_are_committed_by_the_bucket_their_end_falls_in() {
        let mut s = Sessions::default();
        s.place(&[0, 3_000, 14_000], &keys(&["a", "b", "c"]), &[None, None, None], 10_000);
        // Ends: a 10 s, b 13 s (bucket [10, 20)), c 24 s (bucket [20, 30)).
        assert!(s.due(Some(19_999), 10_000).is_empty());
        let due = s.due(Some(20_000), 10_000);
        assert_eq!(due.keys().copied().collect::<Vec<_>>(), [10_000]);
        assert_eq!(due[&10_000].len(), 2);
        let rest = s.due(None, 10_000);
        assert_eq!(rest.keys().copied().collect::<Vec<_>>(), [20_000]);
        assert!(s.open.is_empty());
    }
}

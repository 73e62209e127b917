//! Which source row each target token takes: exact match, else left to the initialiser.

use crate::align::RowSource;
use crate::report::RowNote;
use crate::vocab::SourceVocab;

/// The method names used in counts, reports and metadata.
pub const EXACT: &str = "exact";

/// Row sources for every target token, plus notes for the rows that are not exact copies.
pub struct Plan {
    pub rows: Vec<RowSource>,
    pub notes: Vec<RowNote>,
}

/// Matches each target token against the source vocabulary.
pub fn plan(tokens: &[String], source: &SourceVocab, fill_name: &str) -> Plan {
    let mut rows = Vec::with_capacity(tokens.len());
    let mut notes = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match source.ids.get(t) {
            Some(&id) => rows.push(RowSource::Exact(id)),
            None => {
                rows.push(RowSource::Fill);
                notes.push(RowNote {
                    line: i + 1,
                    token: t.clone(),
                    method: fill_name.to_string(),
                    pieces: Vec::new(),
                });
            }
        }
    }
    Plan { rows, notes }
}

//! The NSR sample (5 households, 15 individuals, rows in every supporting table), converted
//! from the OpenG2P reference data into `specs/sample/*.csv` (see its README for every mend).
//! Built into the binary and loaded as one change set: all of it or none.

use super::csv_import::DraftReader;
use crate::registry::{Author, Registry, WriteError, WriteOutcome};
use anyhow::bail;

/// `(register, CSV)` in load order: parents before children.
pub const SAMPLE_FILES: [(&str, &str); 11] = [
    (
        "household",
        include_str!("../../specs/sample/household.csv"),
    ),
    (
        "individual",
        include_str!("../../specs/sample/individual.csv"),
    ),
    ("asset", include_str!("../../specs/sample/asset.csv")),
    ("consent", include_str!("../../specs/sample/consent.csv")),
    (
        "disability",
        include_str!("../../specs/sample/disability.csv"),
    ),
    (
        "grievance",
        include_str!("../../specs/sample/grievance.csv"),
    ),
    (
        "poverty_score",
        include_str!("../../specs/sample/poverty_score.csv"),
    ),
    (
        "program_participation",
        include_str!("../../specs/sample/program_participation.csv"),
    ),
    (
        "relationship",
        include_str!("../../specs/sample/relationship.csv"),
    ),
    ("shock", include_str!("../../specs/sample/shock.csv")),
    (
        "verification_history",
        include_str!("../../specs/sample/verification_history.csv"),
    ),
];

/// Loads the sample. Loading it again changes nothing (every row carries its id).
pub async fn seed_sample(registry: &Registry) -> anyhow::Result<WriteOutcome> {
    let mut drafts = Vec::new();
    for (register, text) in SAMPLE_FILES {
        let mut reader = DraftReader::new(registry.registers(), register, text.as_bytes())?;
        while let Some((line, row)) = reader.next_row()? {
            match row {
                Ok(draft) => drafts.push(draft),
                Err((_, problems)) => {
                    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    bail!("sample {register}.csv line {line}: {}", listed.join("; "));
                }
            }
        }
    }
    let author = Author {
        actor: "seeder".into(),
        source: "sample".into(),
        reason: Some("NSR sample data".into()),
    };
    match registry.write(&author, &drafts).await {
        Ok(outcome) => Ok(outcome),
        Err(WriteError::Rejected(rejections)) => {
            let listed: Vec<String> = rejections
                .iter()
                .flat_map(|r| {
                    let id = r.functional_id.clone().unwrap_or_default();
                    r.problems.iter().map(move |p| format!("{id} {p}"))
                })
                .collect();
            bail!(
                "the sample does not fit the register definitions: {}",
                listed.join("; ")
            )
        }
        Err(WriteError::Store(error)) => Err(error.into()),
    }
}

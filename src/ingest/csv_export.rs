//! `nsr export csv`: the current records of a register, in creation order, in the same
//! format `nsr import csv` reads (so an export re-imports with no changes).

use crate::registry::Registry;
use crate::registry::record::format_cell;
use anyhow::bail;
use std::io::Write;

/// Writes the register's current records to `out`; `fields` limits the field columns (the
/// `id`, `parent_id` and `status` columns are always written). Returns the number of rows.
pub async fn export_csv(
    registry: &Registry,
    register: &str,
    fields: Option<&[String]>,
    out: impl Write,
) -> anyhow::Result<u64> {
    let Some(def) = registry.registers().get(register) else {
        bail!("no register `{register}`");
    };
    let columns: Vec<String> = match fields {
        Some(names) => {
            let unknown: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| def.field(n).is_none())
                .collect();
            if !unknown.is_empty() {
                bail!(
                    "register `{register}` has no field(s) {}",
                    unknown.join(", ")
                );
            }
            names.to_vec()
        }
        None => def.fields.iter().map(|f| f.name.clone()).collect(),
    };
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(
        ["id", "parent_id", "status"]
            .into_iter()
            .map(str::to_owned)
            .chain(columns.iter().cloned()),
    )?;
    let mut after: Option<uuid::Uuid> = None;
    let mut rows = 0;
    loop {
        let page = registry.store().records_page(register, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for record in &page {
            let mut row = vec![
                record.functional_id.clone(),
                record.parent_functional_id.clone().unwrap_or_default(),
                record.status.as_str().to_owned(),
            ];
            row.extend(
                columns
                    .iter()
                    .map(|c| record.fields.get(c).map(format_cell).unwrap_or_default()),
            );
            writer.write_record(&row)?;
            rows += 1;
        }
    }
    writer.flush()?;
    Ok(rows)
}

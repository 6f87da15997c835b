//! Bulk data in and out: CSV import and export, the synthetic population generator, and the
//! bundled NSR sample.

pub mod csv_export;
pub mod csv_import;
pub mod generate;
pub mod sample;

//! Synthetic population generator (`nsr generate`): one CSV per register, in the importer's
//! format, for tests and benchmarks. The output depends only on the seed and the household
//! count, and rows are streamed: at most one household's members are in memory at a time.
//! Ages are as of 2026-01-01, and no generated date is later than that day.

use crate::registry::ids;
use crate::registry::record::format_cell;
use crate::registry::register::{RegisterDef, Registers};
use anyhow::{Context, Result, bail};
use chrono::{Datelike, Duration, NaiveDate};
use lists::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub size: PopulationSize,
    pub seed: u64,
    /// Directory for the CSV files; created if missing.
    pub out: PathBuf,
}

/// How big a population to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopulationSize {
    Households(u64),
    /// Households until exactly this many individuals (the last household is made to fit).
    Individuals(u64),
}

/// One written file.
#[derive(Debug, Clone)]
pub struct GeneratedFile {
    pub register: String,
    pub path: PathBuf,
    pub rows: u64,
}

/// The written files, in import order: household, individual, then the supporting tables.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub files: Vec<GeneratedFile>,
}

/// Value lists the generator draws from. Kept unformatted: one list per line reads better
/// than one word per line.
#[rustfmt::skip]
mod lists {
    /// Weights of household sizes 1 to 10 (mean about 4.2).
    pub(super) const SIZE_WEIGHTS: [u32; 10] = [8, 14, 18, 20, 16, 10, 6, 4, 2, 2];
    pub(super) const FEMALE_NAMES: &[&str] = &[
        "Amina", "Fatima", "Grace", "Mary", "Priya", "Mei", "Ana", "Sofia", "Aisha", "Zainab", "Nadia",
        "Lucia", "Esther", "Hana", "Leila", "Rosa", "Chipo", "Anjali", "Yuki", "Olga", "Abena", "Maria",
    ];
    pub(super) const MALE_NAMES: &[&str] = &[
        "Ahmed", "John", "Samuel", "Juan", "Ravi", "Wei", "Omar", "Joseph", "Kofi", "Luis", "Ibrahim",
        "David", "Tendai", "Arjun", "Hiro", "Ivan", "Musa", "Peter", "Carlos", "Yusuf", "Kwame", "Ali",
    ];
    pub(super) const LAST_NAMES: &[&str] = &[
        "Mwangi", "Okafor", "Haddad", "Garcia", "Silva", "Nguyen", "Patel", "Kumar", "Chen", "Diallo",
        "Mensah", "Banda", "Hassan", "Santos", "Rivera", "Kim", "Novak", "Cohen", "Mendes", "Tanaka",
        "Abebe", "Osei", "Yilmaz", "Rahman", "Smith", "Moyo", "Traore", "Lopez", "Sato", "Phiri",
    ];
    pub(super) const STREETS: &[&str] = &["Market", "Mission", "Station", "River", "Hill", "Baobab", "School"];
    pub(super) const LANGUAGES: &[&str] = &["en", "fr", "sw", "ar", "pt"];
    pub(super) const CITIZENSHIP: &[&str] = &["CITIZEN", "REFUGEE", "IDP", "RETURNEE", "RESIDENT"];
    pub(super) const PASTORALISM: &[&str] = &["SETTLED", "SEMI_PASTORALIST", "PASTORALIST"];
    pub(super) const MARITAL: &[&str] = &["SINGLE", "MARRIED", "DIVORCED", "SEPARATED", "WIDOWED", "UNKNOWN"];
    pub(super) const CHECKS: &[&str] = &["VERIFIED", "PENDING", "FAILED"];
    pub(super) const LIVELIHOODS: &[&str] = &[
        "AGRICULTURE", "LIVESTOCK", "FISHING", "WAGE_LABOR", "SELF_EMPLOYMENT", "GOVERNMENT_EMPLOYEE",
        "PRIVATE_SECTOR_EMPLOYEE", "BUSINESS_TRADE", "REMITTANCE", "UNEMPLOYED", "OTHER",
    ];
    pub(super) const LIVELIHOOD_WEIGHTS: &[u32] = &[30, 8, 3, 15, 10, 4, 6, 9, 3, 10, 2];
    pub(super) const DOMAINS: &[&str] = &["VISION", "HEARING", "MOBILITY", "COGNITION", "SELF_CARE", "COMMUNICATION"];
    pub(super) const SEVERITIES: &[&str] = &["SOME_DIFFICULTY", "A_LOT_OF_DIFFICULTY", "CANNOT_DO_AT_ALL"];
    pub(super) const SHOCKS: &[&str] = &[
        "DROUGHT", "FLOOD", "CONFLICT", "ILLNESS", "DEATH_OF_EARNER", "JOB_LOSS", "PRICE_SHOCK", "CROP_FAILURE",
        "LIVESTOCK_LOSS", "FIRE", "OTHER",
    ];
    pub(super) const SHOCK_WEIGHTS: &[u32] = &[20, 12, 6, 18, 4, 8, 14, 10, 5, 2, 1];
    pub(super) const COPING: &[&str] = &["BORROW", "SELL_ASSETS", "REDUCE_MEALS", "SEEK_AID", "USE_SAVINGS"];
    pub(super) const PROGRAMS: &[&str] = &["CASH_TRANSFER", "HEALTH_INSURANCE", "SCHOOL_FEEDING", "PUBLIC_WORKS"];
    pub(super) const PROGRAM_NAMES: &[&str] = &["Cash Transfer Programme", "Health Insurance Scheme", "School Feeding", "Public Works"];
    pub(super) const ASSET_TYPES: &[&str] = &["LAND", "LIVESTOCK", "PRODUCTIVE_TOOL", "CONSUMER_DURABLE", "VEHICLE"];
    pub(super) const ASSET_CATEGORIES: [&[&str]; 5] =
        [&["Agricultural"], &["Goat", "Cattle", "Chicken"], &["Plough", "Sewing machine"], &["Radio", "Television"], &["Bicycle", "Motorcycle"]];

    // Housing and services go together, so each is drawn for the household's tier:
    // permanent, semi-permanent or temporary dwelling.
    pub(super) const DWELLINGS: &[&str] = &["PERMANENT", "SEMI_PERMANENT", "TEMPORARY"];
    pub(super) const ROOFS: [&[&str]; 3] = [&["CONCRETE", "TILE"], &["CORRUGATED_IRON", "THATCH"], &["PLASTIC_SHEET"]];
    pub(super) const WALLS: [&[&str]; 3] = [&["BRICK", "CONCRETE"], &["MUD", "WOOD", "STONE"], &["BAMBOO", "OTHER"]];
    pub(super) const FLOORS: [&[&str]; 3] = [&["CEMENT", "TILE"], &["EARTH", "CEMENT", "WOOD"], &["EARTH"]];
    pub(super) const WATER: [&[&str]; 3] = [&["PIPED", "PUBLIC_TAP"], &["WELL", "SPRING", "RAINWATER"], &["SURFACE_WATER", "TANKER_TRUCK"]];
    pub(super) const SANITATION: [&[&str]; 3] = [&["FLUSH_TOILET", "PIT_LATRINE"], &["PIT_LATRINE", "SHARED"], &["OPEN", "SHARED"]];
    pub(super) const LIGHTING: [&[&str]; 3] = [&["GRID"], &["SOLAR", "KEROSENE", "GRID"], &["CANDLE", "NONE", "SOLAR"]];
    pub(super) const FUEL: [&[&str]; 3] = [&["GAS", "ELECTRICITY", "CHARCOAL"], &["CHARCOAL", "FIREWOOD"], &["FIREWOOD", "BIOMASS"]];
}

/// Foundational ids are `NID` + 10 digits: `index * NID_STEP + offset` mod 10^10 is a bijection
/// because the step is coprime to 10, so no two people share one for up to 10^10 people.
const NID_SPACE: u64 = 10_000_000_000;
const NID_STEP: u64 = 7_919_243;

/// Writes the synthetic population into `options.out`, one `<register>.csv` per register.
/// Registers the generator knows nothing about get a header-only file.
pub fn generate(registers: &Registers, options: &GenerateOptions) -> Result<GenerateSummary> {
    let prefix = |name: &str| match registers.get(name) {
        Some(def) => Ok(def.prefix.clone()),
        None => bail!("register `{name}` is not defined; the generator needs it"),
    };
    let (hh_prefix, ind_prefix) = (prefix("household")?, prefix("individual")?);
    let out = &options.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tables = registers
        .iter()
        .map(|def| Table::open(def, out))
        .collect::<Result<Vec<_>>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let keys = [rng.next_u64(), rng.next_u64(), rng.next_u64() % NID_SPACE];
    let mut g = Gen {
        rng,
        tables,
        hh_prefix,
        ind_prefix,
        keys,
        households: 0,
        people: 0,
    };
    match options.size {
        PopulationSize::Households(count) => {
            for _ in 0..count {
                g.household(usize::MAX)?;
            }
        }
        PopulationSize::Individuals(count) => {
            while g.people < count {
                let left = usize::try_from(count - g.people).unwrap_or(usize::MAX);
                g.household(left)?;
            }
        }
    }
    let files = g
        .tables
        .into_iter()
        .map(Table::finish)
        .collect::<Result<Vec<_>>>()?;
    Ok(GenerateSummary { files })
}

/// A keyed bijection on 60-bit numbers (xor, odd multiply and xor-shift are each invertible):
/// ids look random yet never collide, which plain random draws could at a billion rows.
fn scramble(index: u64, key: u64) -> u64 {
    const MASK: u64 = (1 << 60) - 1;
    let x = ((index ^ key) & MASK).wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK;
    let x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK;
    x ^ (x >> 29)
}

/// One of `items`, drawn with `weights`.
fn pick<T: Copy + Default>(rng: &mut ChaCha8Rng, items: &[T], weights: &[u32]) -> T {
    let mut roll = rng.random_range(0..weights.iter().sum::<u32>().max(1));
    for (&item, &weight) in items.iter().zip(weights) {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    T::default()
}

fn one<T: Copy + Default>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items
        .get(rng.random_range(0..items.len().max(1)))
        .copied()
        .unwrap_or_default()
}

/// One of the options for housing tier `tier`.
fn tiered(rng: &mut ChaCha8Rng, options: &[&[&'static str]; 3], tier: usize) -> &'static str {
    options.get(tier).map_or("", |o| one(rng, o))
}

fn v(x: impl Into<Value>) -> Value {
    x.into()
}

/// `x` when `keep`, else an absent cell.
fn opt(keep: bool, x: impl Into<Value>) -> Value {
    if keep { x.into() } else { Value::Null }
}

fn date(y: i32, m: u32, d: u32, plus_days: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default() + Duration::days(plus_days)
}

fn iso(d: NaiveDate) -> Value {
    Value::from(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// One open CSV file; `cells` is reused for every row.
struct Table {
    def: RegisterDef,
    column: BTreeMap<String, usize>,
    cells: Vec<String>,
    writer: csv::Writer<BufWriter<File>>,
    path: PathBuf,
    rows: u64,
}

impl Table {
    fn open(def: &RegisterDef, dir: &Path) -> Result<Self> {
        let path = dir.join(format!("{}.csv", def.name));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 16, file));
        let names = def.fields.iter().map(|f| f.name.as_str());
        writer.write_record(["id", "parent_id", "status"].into_iter().chain(names))?;
        let column = def
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let cells = vec![String::new(); def.fields.len()];
        Ok(Self {
            def: def.clone(),
            column,
            cells,
            writer,
            path,
            rows: 0,
        })
    }

    /// Values for fields the register lacks are dropped; its fields without a value stay empty.
    fn write(&mut self, envelope: [&str; 3], parts: Parts) -> Result<()> {
        for (name, value) in parts.iter().copied().flatten() {
            if let Some(cell) = self.column.get(*name).and_then(|&i| self.cells.get_mut(i)) {
                *cell = format_cell(value);
            }
        }
        for text in envelope {
            self.writer.write_field(text)?;
        }
        for cell in &mut self.cells {
            self.writer.write_field(&*cell)?;
            cell.clear();
        }
        self.writer.write_record(None::<&[u8]>)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<GeneratedFile> {
        self.writer
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(GeneratedFile {
            register: self.def.name,
            path: self.path,
            rows: self.rows,
        })
    }
}

struct Person {
    /// Position in the whole population: keys the functional and foundational ids.
    index: u64,
    id: String,
    first: &'static str,
    last: &'static str,
    female: bool,
    age: i32,
    role: &'static str,
    phone: bool,
    disabled: bool,
}

impl Person {
    fn new(
        rng: &mut ChaCha8Rng,
        female: bool,
        age: i32,
        role: &'static str,
        last: &'static str,
    ) -> Self {
        let first = one(rng, if female { FEMALE_NAMES } else { MALE_NAMES });
        let phone = age >= 18 && rng.random_bool(0.8);
        let disabled = rng.random_bool(if age >= 60 { 0.15 } else { 0.04 });
        Self {
            index: 0,
            id: String::new(),
            first,
            last,
            female,
            age,
            role,
            phone,
            disabled,
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// Head first, then often a spouse, then children and sometimes other relatives, with ages
/// that fit each role (a child is at least 16 years younger than the younger parent).
fn compose(rng: &mut ChaCha8Rng, max_size: usize) -> Vec<Person> {
    let size = pick(rng, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &SIZE_WEIGHTS).min(max_size);
    let child_head = size <= 4 && rng.random_bool(0.01);
    let head_age = match (child_head, rng.random_bool(0.13)) {
        (true, _) => rng.random_range(14..18),
        (false, true) => rng.random_range(60..90),
        (false, false) => rng.random_range(20..60),
    };
    let head_female = rng.random_bool(if head_age >= 60 { 0.4 } else { 0.3 });
    let last = one(rng, LAST_NAMES);
    let mut people = vec![Person::new(rng, head_female, head_age, "SELF", last)];
    let mut youngest_parent = head_age;
    if size > 1 && !child_head && rng.random_bool(0.75) {
        let age = (head_age + rng.random_range(-8..=5)).max(18);
        youngest_parent = youngest_parent.min(age);
        let spouse_last = if rng.random_bool(0.9) {
            last
        } else {
            one(rng, LAST_NAMES)
        };
        people.push(Person::new(rng, !head_female, age, "SPOUSE", spouse_last));
    }
    while people.len() < size {
        let (role, age) = match rng.random::<f64>() {
            _ if child_head => ("SIBLING", rng.random_range(0..head_age)),
            ..0.06 if head_age < 65 => ("PARENT", (head_age + rng.random_range(18..32)).min(100)),
            ..0.09 => ("SIBLING", (head_age + rng.random_range(-10..=10)).max(0)),
            ..0.13 => ("OTHER_RELATIVE", rng.random_range(0..70)),
            _ => (
                "CHILD",
                rng.random_range(0..=(youngest_parent - 16).clamp(0, 40)),
            ),
        };
        let member_last = if role == "OTHER_RELATIVE" {
            one(rng, LAST_NAMES)
        } else {
            last
        };
        let female = rng.random_bool(0.5);
        people.push(Person::new(rng, female, age, role, member_last));
    }
    people
}

/// Employment status and occupation that go with a livelihood.
fn work(livelihood: &str) -> (&'static str, &'static str) {
    match livelihood {
        "AGRICULTURE" => ("SELF_EMPLOYED", "Farmer"),
        "LIVESTOCK" => ("SELF_EMPLOYED", "Herder"),
        "FISHING" => ("SELF_EMPLOYED", "Fisher"),
        "WAGE_LABOR" => ("EMPLOYED", "Casual labourer"),
        "SELF_EMPLOYMENT" => ("SELF_EMPLOYED", "Artisan"),
        "GOVERNMENT_EMPLOYEE" => ("EMPLOYED", "Civil servant"),
        "PRIVATE_SECTOR_EMPLOYEE" => ("EMPLOYED", "Shop assistant"),
        "BUSINESS_TRADE" => ("SELF_EMPLOYED", "Petty trader"),
        "PENSION" => ("RETIRED", "Retired"),
        "UNEMPLOYED" => ("UNEMPLOYED", ""),
        _ => ("OTHER", ""),
    }
}

/// A row's values, in one or more slices (shared location fields, then the row's own).
type Parts<'a> = &'a [&'a [(&'a str, Value)]];

/// What a household's members share.
struct Home {
    id: String,
    district: i32,
    /// Location fields, identical on the household and its members.
    location: Vec<(&'static str, Value)>,
    registered: NaiveDate,
    language: &'static str,
    citizenship: &'static str,
    pastoralist: &'static str,
    mobile: bool,
    /// Housing tier: 0 permanent, 1 semi-permanent, 2 temporary.
    tier: usize,
    coping: i32,
}

impl Home {
    fn dwelling(&self) -> &'static str {
        DWELLINGS.get(self.tier).copied().unwrap_or("OTHER")
    }
}

struct Gen {
    rng: ChaCha8Rng,
    tables: Vec<Table>,
    hh_prefix: String,
    ind_prefix: String,
    /// Seed-derived keys: household ids, individual ids, foundational id offset.
    keys: [u64; 3],
    households: u64,
    people: u64,
}

impl Gen {
    /// Writes one row; with `id` `None` the row is numbered within its table (`DIS-00000001`).
    /// A register missing from the definitions is skipped.
    fn emit(&mut self, register: &str, id: Option<&str>, parent: &str, parts: Parts) -> Result<()> {
        let status = if self.rng.random_bool(0.01) {
            "INACTIVE"
        } else {
            "ACTIVE"
        };
        let Some(table) = self.tables.iter_mut().find(|t| t.def.name == register) else {
            return Ok(());
        };
        match id {
            Some(id) => table.write([id, parent, status], parts),
            None => {
                let id = format!("{}{:08}", table.def.prefix, table.rows + 1);
                table.write([&id, parent, status], parts)
            }
        }
    }

    /// Writes one household of at most `max_size` members, with its members and rows.
    fn household(&mut self, max_size: usize) -> Result<()> {
        let home = self.home();
        let mut members = compose(&mut self.rng, max_size);
        for person in &mut members {
            person.index = self.people;
            person.id = ids::generate(&self.ind_prefix, scramble(self.people, self.keys[1]));
            self.people += 1;
        }
        let Some(head) = members.first() else {
            return Ok(());
        };
        let count = |f: &dyn Fn(&Person) -> bool| members.iter().filter(|p| f(p)).count();
        let (size, u5, elderly) = (
            members.len(),
            count(&|p| p.age < 5),
            count(&|p| p.age >= 60),
        );
        let (tier, rng) = (home.tier, &mut self.rng);
        let headship = match (head.age, head.female) {
            (..18, _) => "CHILD_HEADED",
            (_, true) => "FEMALE_HEADED",
            (60.., _) => "ELDERLY_HEADED",
            _ => "MALE_HEADED",
        };
        let altitude = f64::from(290 + home.district * 9 + rng.random_range(0..60));
        let rooms = rng.random_range(1..=size / 2 + 1);
        let water = tiered(rng, &WATER, tier);
        let walk = rng.random_range(if water == "PIPED" { 0..5 } else { 5..60 });
        let phones = match members.iter().any(|p| p.phone) {
            false => "NONE",
            true if rng.random_bool(if tier == 0 { 0.6 } else { 0.3 }) => "SMARTPHONE",
            true => "BASIC",
        };
        let tenure = match home.citizenship {
            "REFUGEE" | "IDP" => one(rng, &["HOSTED", "TEMPORARY"]),
            _ => pick(rng, &["OWNED", "RENTED", "HOSTED"], &[65, 25, 10]),
        };
        let row = [
            ("altitude", v(altitude)),
            ("household_head_id", v(head.id.as_str())),
            ("household_head_name", v(head.name())),
            ("headship_type", v(headship)),
            ("size_total", v(size)),
            ("size_adults", v(count(&|p| p.age >= 18))),
            ("size_children_u5", v(u5)),
            ("size_school_age", v(count(&|p| (5..18).contains(&p.age)))),
            ("size_elderly", v(elderly)),
            ("number_of_female_members", v(count(&|p| p.female))),
            ("number_of_male_members", v(count(&|p| !p.female))),
            ("elderly_member_present", v(elderly > 0)),
            ("dwelling_type", v(home.dwelling())),
            ("roof_material", v(tiered(rng, &ROOFS, tier))),
            ("wall_material", v(tiered(rng, &WALLS, tier))),
            ("floor_material", v(tiered(rng, &FLOORS, tier))),
            ("tenure_status", v(tenure)),
            ("rooms_count", v(rooms)),
            ("overcrowding_indicator", v(size > 3 * rooms)),
            ("water_source_type", v(water)),
            ("water_distance_minutes", v(walk)),
            ("sanitation_type", v(tiered(rng, &SANITATION, tier))),
            ("lighting_source", v(tiered(rng, &LIGHTING, tier))),
            ("cooking_fuel_type", v(tiered(rng, &FUEL, tier))),
            ("mobile_phone_type", v(phones)),
        ];
        self.emit("household", Some(&home.id), "", &[&home.location, &row])?;
        let spouse = members.iter().find(|p| p.role == "SPOUSE");
        for p in &members {
            let couple = spouse.is_some() && matches!(p.role, "SELF" | "SPOUSE");
            self.individual(p, &home, head, couple)?;
            self.person_tables(p, head, spouse, &home)?;
        }
        self.household_tables(&home, size, u5)
    }

    fn home(&mut self) -> Home {
        let id = ids::generate(&self.hh_prefix, scramble(self.households, self.keys[0]));
        self.households += 1;
        let rng = &mut self.rng;
        // Skewed so that low-numbered districts (around the capital) are more populous.
        let district = ((rng.random::<f64>().powf(1.3) * 100.0) as i32).clamp(0, 99);
        let (region, code) = (district / 10 + 1, format!("D{:03}", district + 1));
        let hierarchy = json!({"hierarchy": [
            {"level": "admin1", "level_value_id": format!("R{region:02}"),
                "level_value_mnemonic": format!("Region {region}")},
            {"level": "admin2", "level_value_id": code,
                "level_value_mnemonic": format!("District {}", district + 1)},
        ]});
        let (y, x) = (f64::from(region), f64::from(district % 10));
        let latitude = round(4.0 + y * 0.9 + x * 0.07 + rng.random_range(-0.05..0.05), 5);
        let longitude = round(30.0 + x * 0.8 + y * 0.1 + rng.random_range(-0.05..0.05), 5);
        let address = format!("{} {} Road", rng.random_range(1..300), one(rng, STREETS));
        let postal = format!("{:03}{:03}", district + 1, rng.random_range(0..1000));
        let location = vec![
            ("latitude", v(latitude)),
            ("longitude", v(longitude)),
            ("address_line_1", v(address)),
            ("postal_code", v(postal)),
            ("country_code", v("XX")),
            ("admin_area_code", v(code)),
            ("admin_area_hierarchy", hierarchy),
        ];
        let citizenship = pick(rng, CITIZENSHIP, &[88, 4, 4, 2, 2]);
        let pastoralist = pick(rng, PASTORALISM, &[85, 10, 5]);
        let roaming = matches!(citizenship, "REFUGEE" | "IDP") && rng.random_bool(0.2);
        let tier = pick(rng, &[0, 1, 2], &[45, 40, 15]);
        Home {
            id,
            district,
            location,
            registered: date(2024, 1, 1, rng.random_range(0..640)),
            language: LANGUAGES
                .get(region as usize % LANGUAGES.len())
                .copied()
                .unwrap_or("en"),
            citizenship,
            pastoralist,
            mobile: pastoralist == "PASTORALIST" || roaming,
            tier,
            coping: rng.random_range(0..15) + 6 * tier as i32,
        }
    }

    fn individual(&mut self, p: &Person, home: &Home, head: &Person, couple: bool) -> Result<()> {
        let (rng, adult) = (&mut self.rng, p.age >= 18);
        let documented = rng.random_bool(0.9);
        // Born in the year before the birthday that gives `age` on 2026-01-01.
        let birth = match documented {
            true => date(2025 - p.age, 1, 2, rng.random_range(0..364)),
            false => date(2025 - p.age, 7, 1, 0),
        };
        let has_nid = p.age >= 5 || rng.random_bool(0.8);
        let nid = (u128::from(p.index) * u128::from(NID_STEP) + u128::from(self.keys[2]))
            % u128::from(NID_SPACE);
        let checked = pick(
            rng,
            &["VERIFIED", "PENDING", "FAILED", "EXCEPTION"],
            &[85, 12, 2, 1],
        );
        let evidence = match (has_nid, checked, documented) {
            (true, "VERIFIED", _) => "FOUNDATIONAL_ID_VERIFIED",
            (_, _, true) => "DOCUMENT",
            _ => "NONE",
        };
        let livelihood = match p.age {
            ..15 => "",
            15..18 if rng.random_bool(0.8) => "",
            65.. if rng.random_bool(0.5) => "PENSION",
            _ => pick(rng, LIVELIHOODS, LIVELIHOOD_WEIGHTS),
        };
        let (employment, occupation) = match (livelihood, p.age) {
            ("", ..5) => ("", ""),
            ("", _) => ("STUDENT", "Student"),
            _ => work(livelihood),
        };
        let second = pick(rng, LIVELIHOODS, LIVELIHOOD_WEIGHTS);
        let has_second = !matches!(livelihood, "" | "PENSION" | "UNEMPLOYED" | "OTHER")
            && !matches!(second, "UNEMPLOYED" | "OTHER")
            && second != livelihood
            && rng.random_bool(0.25);
        let marital = match p.age {
            _ if couple => "MARRIED",
            ..16 => "SINGLE",
            55.. => pick(rng, MARITAL, &[10, 20, 10, 10, 50, 0]),
            _ => pick(rng, MARITAL, &[60, 15, 10, 10, 0, 5]),
        };
        let education = match p.age {
            ..5 => "",
            5..12 => "PRIMARY",
            12..18 => "SECONDARY",
            _ => pick(
                rng,
                &["NONE", "PRIMARY", "SECONDARY", "TERTIARY"],
                &[20, 35, 35, 10],
            ),
        };
        let contact = match (p.phone, adult) {
            (true, _) => one(rng, &["SMS", "CALL"]),
            (false, true) => "VIA_LOCAL_OFFICE",
            (false, false) => "NONE",
        };
        let displacement = match home.citizenship {
            c @ ("REFUGEE" | "IDP" | "RETURNEE") => c,
            _ => "HOST_COMMUNITY",
        };
        let number = format!("+9997{:08}", rng.random_range(0..100_000_000));
        let phones = json!([{"type": "mobile", "number": number, "is_primary": true}]);
        let income = pick(rng, &["LOW", "MEDIUM", "HIGH", "UNKNOWN"], &[55, 30, 5, 10]);
        let residency = pick(rng, &["USUAL_MEMBER", "TEMPORARY", "ABSENT"], &[95, 3, 2]);
        let disability = pick(rng, &["NO", "UNKNOWN"], &[99, 1]);
        let plw = p.female && (15..50).contains(&p.age) && rng.random_bool(0.08);
        let orphan = !adult && p.role != "CHILD" && rng.random_bool(0.3);
        let chronic = rng.random_bool(if p.age >= 60 { 0.2 } else { 0.05 });
        let row = [
            ("foundational_id", opt(has_nid, format!("NID{nid:010}"))),
            (
                "foundational_id_masked",
                opt(has_nid, format!("XXXXXX{:04}", nid % 10_000)),
            ),
            ("foundational_id_verification_status", opt(has_nid, checked)),
            ("identity_evidence_type", v(evidence)),
            ("first_name", v(p.first)),
            ("last_name", v(p.last)),
            ("full_name", v(p.name())),
            ("gender", v(if p.female { "FEMALE" } else { "MALE" })),
            ("birth_date", iso(birth)),
            ("estimated_age", v(p.age)),
            (
                "age_method",
                v(if documented {
                    "DOCUMENTED"
                } else {
                    "ESTIMATED"
                }),
            ),
            ("phone_numbers", opt(p.phone, phones)),
            ("marital_status", v(marital)),
            ("occupation", opt(!occupation.is_empty(), occupation)),
            ("education_level", opt(!education.is_empty(), education)),
            ("income_level", opt(adult, income)),
            ("language_code", v(home.language)),
            ("registration_date", iso(home.registered)),
            ("citizenship_category", v(home.citizenship)),
            ("relationship_to_head", v(p.role)),
            ("residency_status", v(residency)),
            (
                "dependency_indicator",
                v(!adult || p.age >= 65 || employment == "UNEMPLOYED"),
            ),
            ("preferred_contact_method", v(contact)),
            ("contact_person_name", opt(!adult, head.name())),
            (
                "disability_status",
                v(if p.disabled { "YES" } else { disability }),
            ),
            ("plw_status", opt(p.female, plw)),
            ("plw_status_date", opt(plw, iso(home.registered))),
            ("orphanhood_flag", v(orphan)),
            ("chronic_illness_flag", v(chronic)),
            ("displacement_status", v(displacement)),
            ("pastoralist_classification", v(home.pastoralist)),
            ("high_mobility_indicator", v(home.mobile)),
            (
                "primary_livelihood",
                opt(!livelihood.is_empty(), livelihood),
            ),
            ("secondary_livelihood", opt(has_second, second)),
            ("employment_status", opt(!employment.is_empty(), employment)),
            (
                "coping_strategies_index",
                opt(adult, home.coping + rng.random_range(0..6)),
            ),
        ];
        self.emit("individual", Some(&p.id), &home.id, &[&home.location, &row])
    }

    fn person_tables(
        &mut self,
        p: &Person,
        head: &Person,
        spouse: Option<&Person>,
        home: &Home,
    ) -> Result<()> {
        let rng = &mut self.rng;
        let (first, domains) = (
            rng.random_range(0..DOMAINS.len()),
            pick(rng, &[1, 2, 3], &[70, 20, 10]),
        );
        for k in (0..domains).filter(|_| p.disabled) {
            let domain = DOMAINS
                .get((first + k) % DOMAINS.len())
                .copied()
                .unwrap_or("MOBILITY");
            let severity = pick(&mut self.rng, SEVERITIES, &[55, 35, 10]);
            let row = [
                ("disability_domain", v(domain)),
                ("disability_severity", v(severity)),
            ];
            self.emit("disability", None, &p.id, &[&row])?;
        }
        let rng = &mut self.rng;
        if p.age >= 18 {
            // As in the bundled sample, refugees consent to social protection only and bar
            // the interior ministry from using their data for enforcement.
            let (yes, refugee) = (rng.random_bool(0.95), home.citizenship == "REFUGEE");
            let scope = match refugee {
                true => json!(["social_protection"]),
                false => json!(["social_protection", "dci_sharing"]),
            };
            let method = pick(
                rng,
                &["SIGNED", "VERBAL", "DIGITAL", "BIOMETRIC"],
                &[40, 25, 20, 15],
            );
            let barred = json!([{"partner": "ministry-of-interior", "purpose": "enforcement"}]);
            let row = [
                ("consent_captured", v(yes)),
                ("consent_date", opt(yes, iso(home.registered))),
                ("consent_scope", opt(yes, scope)),
                ("consent_method", opt(yes, method)),
                ("data_sharing_restrictions", opt(yes && refugee, barred)),
            ];
            self.emit("consent", None, &p.id, &[&row])?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.1) {
            let when = date(2024, 7, 1, rng.random_range(0..540));
            let quarter = format!("{}-Q{}", when.year(), when.month0() / 3 + 1);
            let row = [
                ("shock_type", v(pick(rng, SHOCKS, SHOCK_WEIGHTS))),
                ("shock_date", iso(when)),
                ("shock_period", v(quarter)),
                ("coping_strategy", v(one(rng, COPING))),
            ];
            self.emit("shock", None, &p.id, &[&row])?;
        }
        // SPOUSES rows hang off the head, PARENTS rows off the child, as in the bundled sample.
        let rng = &mut self.rng;
        let row = match (p.role, spouse) {
            ("SELF", Some(s)) => {
                let years = rng.random_range(0..=(p.age.min(s.age) - 18).max(0));
                vec![
                    ("relationship_type", v("SPOUSES")),
                    ("person1", v(p.id.as_str())),
                    ("person2", v(s.id.as_str())),
                    ("is_married", v(true)),
                    (
                        "married_on",
                        iso(date(2025 - years, 1, 1, rng.random_range(0..365))),
                    ),
                    ("is_separated", v(false)),
                ]
            }
            ("CHILD", _) => vec![
                ("relationship_type", v("PARENTS")),
                ("parent1", v(head.id.as_str())),
                ("parent2", spouse.map_or(Value::Null, |s| v(s.id.as_str()))),
                ("is_adopted", v(rng.random_bool(0.02))),
            ],
            _ => return Ok(()),
        };
        self.emit("relationship", None, &p.id, &[&row])
    }

    fn household_tables(&mut self, home: &Home, size: usize, u5: usize) -> Result<()> {
        let rng = &mut self.rng;
        // Higher is poorer: the score grows with size, young children and poorer housing.
        let score = 1.0 + 0.3 * size as f64 + 0.35 * u5 as f64 + 0.6 * home.tier as f64;
        let score = round((score + rng.random_range(-0.4..0.4)).clamp(1.0, 6.0), 2);
        let inputs =
            json!({"size_total": size, "size_children_u5": u5, "dwelling_type": home.dwelling()});
        let row = [
            ("pmt_score", v(score)),
            ("pmt_score_type", v("POVERTY")),
            ("pmt_variables", inputs),
            (
                "pmt_calculation_date",
                iso(home.registered + Duration::days(rng.random_range(0..60))),
            ),
            ("pmt_model_version", v("PMT-2026-SYN")),
        ];
        self.emit("poverty_score", None, &home.id, &[&row])?;
        for _ in 0..pick(&mut self.rng, &[0, 1, 2], &[25, 50, 25]) {
            let rng = &mut self.rng;
            let kind = rng.random_range(0..ASSET_TYPES.len());
            let category = ASSET_CATEGORIES.get(kind).map_or("", |c| one(rng, c));
            let quantity = match kind {
                0 => 1,
                1 => rng.random_range(1..30),
                _ => rng.random_range(1..3),
            };
            let hectares = round(rng.random_range(0.1..5.0), 1);
            let band = match (kind, quantity) {
                (0, _) if hectares < 1.0 => "0-1ha",
                (0, _) => "1-5ha",
                (1, ..6) => "1-5 heads",
                (1, ..11) => "6-10 heads",
                (1, _) => "11+ heads",
                _ => "",
            };
            let row = [
                (
                    "asset_type",
                    v(ASSET_TYPES.get(kind).copied().unwrap_or("OTHER")),
                ),
                ("asset_category", v(category)),
                ("quantity", v(quantity)),
                ("size_value", opt(kind == 0, hectares)),
                ("size_unit", opt(kind == 0, "HECTARE")),
                ("size_band", opt(!band.is_empty(), band)),
            ];
            self.emit("asset", None, &home.id, &[&row])?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.2) {
            let program = rng.random_range(0..PROGRAMS.len());
            let channel = pick(
                rng,
                &["MOBILE_MONEY", "BANK", "CASH", "OTHER"],
                &[45, 20, 30, 5],
            );
            let row = [
                ("linked_register_mnemonic", v("Household")),
                (
                    "program_name",
                    v(PROGRAM_NAMES.get(program).copied().unwrap_or("Programme")),
                ),
                (
                    "program_mnemonic",
                    v(PROGRAMS.get(program).copied().unwrap_or("OTHER")),
                ),
                (
                    "program_start_date",
                    iso(date(2023, 1, 1, rng.random_range(0..1000))),
                ),
                ("payment_channel_preference", v(channel)),
                (
                    "payment_verification_status",
                    v(pick(rng, CHECKS, &[80, 15, 5])),
                ),
            ];
            self.emit("program_participation", None, &home.id, &[&row])?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.1) {
            let day = iso(home.registered + Duration::days(rng.random_range(30..90)));
            let (hour, minute) = (rng.random_range(8..17), rng.random_range(0..60));
            let enumerator = format!(
                "ENUM-{:03}{:02}",
                home.district + 1,
                rng.random_range(0..20)
            );
            let row = [
                ("linked_register_mnemonic", v("Household")),
                (
                    "update_trigger",
                    v(one(rng, &["PERIODIC_UPDATE", "ON_DEMAND_UPDATE"])),
                ),
                (
                    "data_source",
                    v(one(rng, &["FIELD_VERIFICATION", "FOUNDATIONAL_ID"])),
                ),
                ("enumerator_id", v(enumerator)),
                (
                    "office_location_code",
                    v(format!("D{:03}", home.district + 1)),
                ),
                ("verification_status", v(pick(rng, CHECKS, &[85, 10, 5]))),
                (
                    "verification_method",
                    v(one(rng, &["HOME_VISIT", "ID_API_CHECK"])),
                ),
                (
                    "verified_at",
                    v(format!("{}T{hour:02}:{minute:02}:00Z", format_cell(&day))),
                ),
            ];
            self.emit("verification_history", None, &home.id, &[&row])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::{Fields, parse_cell, validate_fields};
    use crate::registry::register::FieldType;
    use std::collections::{BTreeSet, HashMap};

    type Row = HashMap<String, String>;

    fn registers() -> Registers {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/registers");
        Registers::load_dir(Path::new(dir)).unwrap()
    }

    fn run(
        registers: &Registers,
        households: u64,
        seed: u64,
    ) -> (tempfile::TempDir, GenerateSummary) {
        run_sized(registers, PopulationSize::Households(households), seed)
    }

    fn run_sized(
        registers: &Registers,
        size: PopulationSize,
        seed: u64,
    ) -> (tempfile::TempDir, GenerateSummary) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let summary = generate(registers, &GenerateOptions { size, seed, out }).unwrap();
        (dir, summary)
    }

    #[test]
    fn a_population_sized_by_individuals_has_exactly_that_many() {
        let (_dir, summary) = run_sized(&registers(), PopulationSize::Individuals(1001), 3);
        let (_, individuals) = read(&summary, "individual");
        let (_, households) = read(&summary, "household");
        assert_eq!(individuals.len(), 1001);
        let sizes: u64 = households
            .iter()
            .map(|h| h["size_total"].parse::<u64>().unwrap())
            .sum();
        assert_eq!(sizes, 1001, "household sizes count every individual once");
    }

    /// The header and rows of `<register>.csv`, each row as a map from column to cell.
    fn read(summary: &GenerateSummary, register: &str) -> (Vec<String>, Vec<Row>) {
        let file = summary
            .files
            .iter()
            .find(|f| f.register == register)
            .unwrap();
        let mut reader = csv::Reader::from_path(&file.path).unwrap();
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<Row> = reader
            .records()
            .map(|r| {
                header
                    .iter()
                    .cloned()
                    .zip(r.unwrap().iter().map(String::from))
                    .collect()
            })
            .collect();
        assert_eq!(
            rows.len() as u64,
            file.rows,
            "{register}: row count in the summary"
        );
        (header, rows)
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let registers = registers();
        let [(_a, first), (_b, again), (_c, other)] =
            [7, 7, 8].map(|seed| run(&registers, 60, seed));
        let names: Vec<&str> = first.files.iter().map(|f| f.register.as_str()).collect();
        assert_eq!(names[..2], ["household", "individual"]);
        assert_eq!(names.len(), registers.names().count());
        for (x, y) in first.files.iter().zip(&again.files) {
            let same = std::fs::read(&x.path).unwrap() == std::fs::read(&y.path).unwrap();
            assert!(
                same,
                "{} differs between two runs with one seed",
                x.register
            );
        }
        let individuals = |s: &GenerateSummary| std::fs::read(&s.files[1].path).unwrap();
        assert_ne!(individuals(&first), individuals(&other));
    }

    #[test]
    fn households_agree_with_their_members() {
        let (_dir, summary) = run(&registers(), 200, 42);
        let (_, households) = read(&summary, "household");
        let (_, individuals) = read(&summary, "individual");
        assert_eq!(households.len(), 200);
        let mut members: HashMap<&str, Vec<&Row>> = HashMap::new();
        for person in &individuals {
            members
                .entry(&person["parent_id"])
                .or_default()
                .push(person);
        }
        let household_ids: BTreeSet<&str> = households.iter().map(|h| h["id"].as_str()).collect();
        assert!(members.keys().all(|parent| household_ids.contains(parent)));
        for hh in &households {
            let people = &members[hh["id"].as_str()];
            let ages: Vec<i64> = people
                .iter()
                .map(|p| p["estimated_age"].parse().unwrap())
                .collect();
            let n = |f: &dyn Fn(i64) -> bool| ages.iter().filter(|a| f(**a)).count().to_string();
            let women = people.iter().filter(|p| p["gender"] == "FEMALE").count();
            assert_eq!(hh["size_total"], people.len().to_string());
            assert_eq!(hh["size_adults"], n(&|a| a >= 18));
            assert_eq!(hh["size_children_u5"], n(&|a| a < 5));
            assert_eq!(hh["size_school_age"], n(&|a| (5..18).contains(&a)));
            assert_eq!(hh["size_elderly"], n(&|a| a >= 60));
            assert_eq!(hh["number_of_female_members"], women.to_string());
            let head = people[0];
            assert_eq!(head["relationship_to_head"], "SELF");
            assert_eq!(
                (&head["id"], &head["full_name"]),
                (&hh["household_head_id"], &hh["household_head_name"])
            );
            let heads = people
                .iter()
                .filter(|p| p["relationship_to_head"] == "SELF")
                .count();
            assert_eq!(heads, 1);
            if head["gender"] == "FEMALE" && ages[0] >= 18 {
                assert_eq!(hh["headship_type"], "FEMALE_HEADED");
            }
            assert!(
                people
                    .iter()
                    .all(|p| p["admin_area_code"] == hh["admin_area_code"])
            );
        }
        for person in &individuals {
            let born = NaiveDate::parse_from_str(&person["birth_date"], "%Y-%m-%d").unwrap();
            let age = date(2026, 1, 1, 0).years_since(born).unwrap();
            assert_eq!(age.to_string(), person["estimated_age"], "{}", person["id"]);
        }
        let mean = individuals.len() as f64 / households.len() as f64;
        assert!((3.6..4.8).contains(&mean), "mean household size {mean}");
        let individual_ids: BTreeSet<&str> = individuals.iter().map(|p| p["id"].as_str()).collect();
        for file in &summary.files[2..] {
            for row in read(&summary, &file.register).1 {
                let parent = row["parent_id"].as_str();
                let known = individual_ids.contains(parent) || household_ids.contains(parent);
                assert!(known, "{}: unknown parent {parent}", file.register);
            }
        }
    }

    #[test]
    fn foundational_ids_are_unique() {
        let (_dir, summary) = run(&registers(), 300, 3);
        let (_, individuals) = read(&summary, "individual");
        let nids: Vec<&str> = individuals
            .iter()
            .map(|p| p["foundational_id"].as_str())
            .collect();
        let given: Vec<&str> = nids.iter().copied().filter(|id| !id.is_empty()).collect();
        let distinct: BTreeSet<&str> = given.iter().copied().collect();
        assert_eq!(distinct.len(), given.len(), "a foundational id repeats");
        assert!(
            given
                .iter()
                .all(|id| id.len() == 13 && id.starts_with("NID"))
        );
        let missing = nids.len() - given.len();
        assert!(
            (1..nids.len() / 12).contains(&missing),
            "{missing} of {} have none",
            nids.len()
        );
        // Both number schemes are bijections, so a large range never collides either.
        let numbers: BTreeSet<u64> = (0..100_000)
            .map(|i| (i * NID_STEP + 12_345) % NID_SPACE)
            .collect();
        let bodies: BTreeSet<String> = (0..100_000)
            .map(|i| ids::generate("IND-", scramble(i, 99)))
            .collect();
        assert_eq!((numbers.len(), bodies.len()), (100_000, 100_000));
    }

    #[test]
    fn every_cell_passes_the_registers_validation() {
        let registers = registers();
        let (_dir, summary) = run(&registers, 200, 11);
        for file in &summary.files {
            let def = registers.get(&file.register).unwrap();
            let (header, rows) = read(&summary, &file.register);
            let fields = def.fields.iter().map(|f| f.name.as_str());
            let expected: Vec<&str> = ["id", "parent_id", "status"]
                .into_iter()
                .chain(fields)
                .collect();
            assert_eq!(header, expected);
            let ids: BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str()).collect();
            assert_eq!(ids.len(), rows.len(), "{}: ids repeat", file.register);
            for row in &rows {
                assert!(
                    ids::check_supplied(def, &row["id"]).is_ok(),
                    "{}",
                    row["id"]
                );
                assert!(matches!(row["status"].as_str(), "ACTIVE" | "INACTIVE"));
                let mut values = Fields::new();
                for field in def.fields.iter().filter(|f| !row[&f.name].is_empty()) {
                    let cell = &row[&field.name];
                    let value = parse_cell(field, cell)
                        .unwrap_or_else(|p| panic!("{}: {p}", file.register));
                    values.insert(field.name.clone(), value);
                    // Nothing is dated after the population's as-of day.
                    if matches!(field.ty, FieldType::Date | FieldType::Datetime) {
                        assert!(
                            cell.as_str() < "2026-01-02",
                            "{}.{} = {cell}",
                            file.register,
                            field.name
                        );
                    }
                }
                let problems = validate_fields(def, &values);
                assert!(
                    problems.is_empty(),
                    "{} {}: {problems:?}",
                    file.register,
                    row["id"]
                );
            }
            assert!(
                rows.len() > 10 || file.register == "grievance",
                "{} has {} rows",
                file.register,
                rows.len()
            );
        }
    }

    #[test]
    fn columns_follow_the_definitions() {
        let mut defs: Vec<RegisterDef> = registers()
            .iter()
            .filter(|d| d.name != "shock")
            .cloned()
            .collect();
        let individual = defs.iter_mut().find(|d| d.name == "individual").unwrap();
        let mut extra = individual.fields[0].clone();
        extra.name = "favourite_colour".into();
        individual.fields.push(extra);
        let registers = Registers::from_defs(defs, Path::new("specs/registers")).unwrap();
        let (_dir, summary) = run(&registers, 20, 5);
        assert!(summary.files.iter().all(|f| f.register != "shock"));
        let (header, rows) = read(&summary, "individual");
        assert_eq!(header.last().map(String::as_str), Some("favourite_colour"));
        assert!(rows.len() > 20 && rows.iter().all(|r| r["favourite_colour"].is_empty()));
    }
}

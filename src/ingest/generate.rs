//! Synthetic population generator (`nsr generate`): one CSV per register, in the importer's
//! format, for tests and benchmarks. The output depends only on the seed and the household
//! count, and rows are streamed: at most one household's members are in memory at a time.

use crate::registry::ids;
use crate::registry::record::format_cell;
use crate::registry::register::{RegisterDef, Registers};
use anyhow::{Context, Result, bail};
use chrono::{Datelike, Duration, NaiveDate};
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
    pub households: u64,
    pub seed: u64,
    /// Directory for the CSV files; created if missing.
    pub out: PathBuf,
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

const SIZES: [(usize, u32); 10] = [
    (1, 8),
    (2, 14),
    (3, 18),
    (4, 20),
    (5, 16),
    (6, 10),
    (7, 6),
    (8, 4),
    (9, 2),
    (10, 2),
];
const FEMALE_NAMES: &[&str] = &[
    "Amina", "Fatima", "Grace", "Mary", "Priya", "Mei", "Ana", "Sofia", "Aisha", "Zainab", "Nadia",
    "Lucia", "Esther", "Hana", "Leila", "Rosa", "Chipo", "Anjali", "Yuki", "Olga", "Abena",
    "Maria",
];
const MALE_NAMES: &[&str] = &[
    "Ahmed", "John", "Samuel", "Juan", "Ravi", "Wei", "Omar", "Joseph", "Kofi", "Luis", "Ibrahim",
    "David", "Tendai", "Arjun", "Hiro", "Ivan", "Musa", "Peter", "Carlos", "Yusuf", "Kwame", "Ali",
];
const LAST_NAMES: &[&str] = &[
    "Mwangi", "Okafor", "Haddad", "Garcia", "Silva", "Nguyen", "Patel", "Kumar", "Chen", "Diallo",
    "Mensah", "Banda", "Hassan", "Santos", "Rivera", "Kim", "Novak", "Cohen", "Mendes", "Tanaka",
    "Abebe", "Osei", "Yilmaz", "Rahman", "Smith", "Moyo", "Traore", "Lopez", "Sato", "Phiri",
];
const STREETS: &[&str] = &[
    "Market", "Mission", "Station", "River", "Hill", "Baobab", "School", "Church",
];
const LANGUAGES: &[&str] = &["en", "fr", "sw", "ar", "pt"];
/// Livelihood, the employment status and occupation that go with it, and its weight.
const LIVELIHOODS: [((&str, &str, &str), u32); 11] = [
    (("AGRICULTURE", "SELF_EMPLOYED", "Farmer"), 30),
    (("LIVESTOCK", "SELF_EMPLOYED", "Herder"), 8),
    (("FISHING", "SELF_EMPLOYED", "Fisher"), 3),
    (("WAGE_LABOR", "EMPLOYED", "Casual labourer"), 15),
    (("SELF_EMPLOYMENT", "SELF_EMPLOYED", "Artisan"), 10),
    (("GOVERNMENT_EMPLOYEE", "EMPLOYED", "Civil servant"), 4),
    (("PRIVATE_SECTOR_EMPLOYEE", "EMPLOYED", "Shop assistant"), 6),
    (("BUSINESS_TRADE", "SELF_EMPLOYED", "Petty trader"), 9),
    (("REMITTANCE", "OTHER", ""), 3),
    (("UNEMPLOYED", "UNEMPLOYED", ""), 10),
    (("OTHER", "OTHER", ""), 2),
];
const DOMAINS: &[&str] = &[
    "VISION",
    "HEARING",
    "MOBILITY",
    "COGNITION",
    "SELF_CARE",
    "COMMUNICATION",
];
const PROGRAMS: &[(&str, &str)] = &[
    ("Cash Transfer Programme", "CASH_TRANSFER"),
    ("Health Insurance Scheme", "HEALTH_INSURANCE"),
    ("School Feeding Programme", "SCHOOL_FEEDING"),
    ("Public Works Programme", "PUBLIC_WORKS"),
];
const ASSETS: &[(&str, &str)] = &[
    ("LAND", "Agricultural"),
    ("LIVESTOCK", "Goat"),
    ("LIVESTOCK", "Cattle"),
    ("LIVESTOCK", "Chicken"),
    ("PRODUCTIVE_TOOL", "Plough"),
    ("PRODUCTIVE_TOOL", "Sewing machine"),
    ("CONSUMER_DURABLE", "Radio"),
    ("CONSUMER_DURABLE", "Television"),
    ("VEHICLE", "Bicycle"),
    ("VEHICLE", "Motorcycle"),
];

/// Housing and services go together: a permanent house rarely draws surface water.
#[derive(Clone, Copy, Default)]
struct Tier {
    dwelling: &'static str,
    roof: [&'static str; 2],
    wall: [&'static str; 2],
    floor: [&'static str; 2],
    water: [&'static str; 3],
    sanitation: [&'static str; 2],
    lighting: [&'static str; 2],
    fuel: [&'static str; 2],
    /// Added to the PMT score and the coping index: poorer housing, higher scores.
    hardship: f64,
}

const TIERS: [(Tier, u32); 3] = [
    (
        Tier {
            dwelling: "PERMANENT",
            roof: ["CONCRETE", "TILE"],
            wall: ["BRICK", "CONCRETE"],
            floor: ["CEMENT", "TILE"],
            water: ["PIPED", "PIPED", "PUBLIC_TAP"],
            sanitation: ["FLUSH_TOILET", "PIT_LATRINE"],
            lighting: ["GRID", "SOLAR"],
            fuel: ["GAS", "ELECTRICITY"],
            hardship: 0.0,
        },
        45,
    ),
    (
        Tier {
            dwelling: "SEMI_PERMANENT",
            roof: ["CORRUGATED_IRON", "THATCH"],
            wall: ["MUD", "WOOD"],
            floor: ["EARTH", "CEMENT"],
            water: ["PUBLIC_TAP", "WELL", "RAINWATER"],
            sanitation: ["PIT_LATRINE", "SHARED"],
            lighting: ["SOLAR", "KEROSENE"],
            fuel: ["CHARCOAL", "FIREWOOD"],
            hardship: 0.6,
        },
        40,
    ),
    (
        Tier {
            dwelling: "TEMPORARY",
            roof: ["PLASTIC_SHEET", "THATCH"],
            wall: ["BAMBOO", "OTHER"],
            floor: ["EARTH", "OTHER"],
            water: ["WELL", "SURFACE_WATER", "TANKER_TRUCK"],
            sanitation: ["OPEN", "SHARED"],
            lighting: ["CANDLE", "NONE"],
            fuel: ["FIREWOOD", "BIOMASS"],
            hardship: 1.2,
        },
        15,
    ),
];

/// Foundational ids are `NID` + 10 digits: index * NID_STEP + offset mod 10^10 is a bijection
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
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let tables = registers
        .iter()
        .map(|def| Table::open(def, &options.out))
        .collect::<Result<Vec<_>>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (hh_key, ind_key, nid_offset) =
        (rng.next_u64(), rng.next_u64(), rng.next_u64() % NID_SPACE);
    let mut g = Gen {
        rng,
        tables,
        hh_prefix,
        ind_prefix,
        hh_key,
        ind_key,
        nid_offset,
        households: 0,
        people: 0,
    };
    for _ in 0..options.households {
        g.household()?;
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

fn pick<T: Copy + Default>(rng: &mut ChaCha8Rng, options: &[(T, u32)]) -> T {
    let mut roll = rng.random_range(0..options.iter().map(|o| o.1).sum::<u32>().max(1));
    for &(value, weight) in options {
        if roll < weight {
            return value;
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
    Value::from(d.format("%Y-%m-%d").to_string())
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
        writer.write_record(
            ["id", "parent_id", "status"]
                .into_iter()
                .chain(def.fields.iter().map(|f| f.name.as_str())),
        )?;
        let column = def
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Ok(Self {
            def: def.clone(),
            column,
            cells: vec![String::new(); def.fields.len()],
            writer,
            path,
            rows: 0,
        })
    }

    /// Values for fields the register lacks are dropped; its fields without a value stay empty.
    fn write(
        &mut self,
        id: &str,
        parent: &str,
        status: &str,
        fields: &[(&str, Value)],
    ) -> Result<()> {
        for (name, value) in fields {
            if let Some(cell) = self.column.get(*name).and_then(|&i| self.cells.get_mut(i)) {
                *cell = format_cell(value);
            }
        }
        for envelope in [id, parent, status] {
            self.writer.write_field(envelope)?;
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
fn compose(rng: &mut ChaCha8Rng) -> Vec<Person> {
    let size = pick(rng, &SIZES);
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
        let roll: f64 = rng.random();
        let (role, age) = match roll {
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

/// What a household's members share.
struct Home {
    id: String,
    district: i32,
    location: Vec<(&'static str, Value)>,
    registered: NaiveDate,
    language: &'static str,
    citizenship: &'static str,
    pastoralist: &'static str,
    mobile: bool,
    tier: Tier,
    coping: i32,
}

struct Gen {
    rng: ChaCha8Rng,
    tables: Vec<Table>,
    hh_prefix: String,
    ind_prefix: String,
    hh_key: u64,
    ind_key: u64,
    nid_offset: u64,
    households: u64,
    people: u64,
}

impl Gen {
    /// Writes one row; with `id` `None` the row is numbered within its table (`DIS-00000001`).
    /// A register missing from the definitions is skipped.
    fn emit(
        &mut self,
        register: &str,
        id: Option<&str>,
        parent: &str,
        fields: &[(&str, Value)],
    ) -> Result<()> {
        let status = if self.rng.random_bool(0.01) {
            "INACTIVE"
        } else {
            "ACTIVE"
        };
        let Some(table) = self.tables.iter_mut().find(|t| t.def.name == register) else {
            return Ok(());
        };
        match id {
            Some(id) => table.write(id, parent, status, fields),
            None => table.write(
                &format!("{}{:08}", table.def.prefix, table.rows + 1),
                parent,
                status,
                fields,
            ),
        }
    }

    fn household(&mut self) -> Result<()> {
        let home = self.home();
        let rng = &mut self.rng;
        let mut members = compose(rng);
        for person in &mut members {
            person.index = self.people;
            person.id = ids::generate(&self.ind_prefix, scramble(self.people, self.ind_key));
            self.people += 1;
        }
        let Some(head) = members.first() else {
            return Ok(());
        };
        let count = |f: &dyn Fn(&Person) -> bool| members.iter().filter(|p| f(p)).count();
        let (size, u5, tier) = (members.len(), count(&|p| p.age < 5), home.tier);
        let headship = match (head.age, head.female) {
            (..18, _) => "CHILD_HEADED",
            (_, true) => "FEMALE_HEADED",
            (60.., _) => "ELDERLY_HEADED",
            _ => "MALE_HEADED",
        };
        let rooms = rng.random_range(1..=size / 2 + 1);
        let water = one(rng, &tier.water);
        let smartphone = rng.random_bool(if tier.dwelling == "PERMANENT" {
            0.6
        } else {
            0.3
        });
        let phones = match (members.iter().any(|p| p.phone), smartphone) {
            (false, _) => "NONE",
            (true, true) => "SMARTPHONE",
            (true, false) => "BASIC",
        };
        let tenure = match home.citizenship {
            "REFUGEE" | "IDP" => one(rng, &["HOSTED", "TEMPORARY"]),
            _ => pick(rng, &[("OWNED", 65), ("RENTED", 25), ("HOSTED", 10)]),
        };
        let mut row = home.location.clone();
        row.extend([
            (
                "altitude",
                v(f64::from(290 + home.district * 9 + rng.random_range(0..60))),
            ),
            ("household_head_id", v(head.id.as_str())),
            ("household_head_name", v(head.name())),
            ("headship_type", v(headship)),
            ("size_total", v(size)),
            ("size_adults", v(count(&|p| p.age >= 18))),
            ("size_children_u5", v(u5)),
            ("size_school_age", v(count(&|p| (5..18).contains(&p.age)))),
            ("size_elderly", v(count(&|p| p.age >= 60))),
            ("elderly_member_present", v(count(&|p| p.age >= 60) > 0)),
            ("number_of_female_members", v(count(&|p| p.female))),
            ("number_of_male_members", v(count(&|p| !p.female))),
            ("dwelling_type", v(tier.dwelling)),
            ("roof_material", v(one(rng, &tier.roof))),
            ("wall_material", v(one(rng, &tier.wall))),
            ("floor_material", v(one(rng, &tier.floor))),
            ("tenure_status", v(tenure)),
            ("rooms_count", v(rooms)),
            ("overcrowding_indicator", v(size > 3 * rooms)),
            ("water_source_type", v(water)),
            (
                "water_distance_minutes",
                v(if water == "PIPED" {
                    rng.random_range(0..5)
                } else {
                    rng.random_range(5..60)
                }),
            ),
            ("sanitation_type", v(one(rng, &tier.sanitation))),
            ("lighting_source", v(one(rng, &tier.lighting))),
            ("cooking_fuel_type", v(one(rng, &tier.fuel))),
            ("mobile_phone_type", v(phones)),
        ]);
        self.emit("household", Some(&home.id), "", &row)?;
        let spouse = members.iter().find(|p| p.role == "SPOUSE");
        for p in &members {
            self.individual(
                p,
                &home,
                head,
                spouse.is_some() && matches!(p.role, "SELF" | "SPOUSE"),
            )?;
            self.person_tables(p, head, spouse, &home)?;
        }
        self.household_tables(&home, size, u5)
    }

    fn home(&mut self) -> Home {
        let id = ids::generate(&self.hh_prefix, scramble(self.households, self.hh_key));
        self.households += 1;
        let rng = &mut self.rng;
        // Skewed so low-numbered districts (around the capital) are more populous.
        let district = ((rng.random::<f64>().powf(1.3) * 100.0) as i32).clamp(0, 99);
        let (region, code) = (district / 10 + 1, format!("D{:03}", district + 1));
        let hierarchy = json!({"hierarchy": [
            {"level": "admin1", "level_value_id": format!("R{region:02}"), "level_value_mnemonic": format!("Region {region}")},
            {"level": "admin2", "level_value_id": code, "level_value_mnemonic": format!("District {}", district + 1)},
        ]});
        let (row, col) = (f64::from(region), f64::from(district % 10));
        let location = vec![
            (
                "latitude",
                v(round(
                    4.0 + row * 0.9 + col * 0.07 + rng.random_range(-0.05..0.05),
                    5,
                )),
            ),
            (
                "longitude",
                v(round(
                    30.0 + col * 0.8 + row * 0.1 + rng.random_range(-0.05..0.05),
                    5,
                )),
            ),
            (
                "address_line_1",
                v(format!(
                    "{} {} Road",
                    rng.random_range(1..300),
                    one(rng, STREETS)
                )),
            ),
            (
                "postal_code",
                v(format!(
                    "{:03}{:03}",
                    district + 1,
                    rng.random_range(0..1000)
                )),
            ),
            ("country_code", v("XX")),
            ("admin_area_code", v(code)),
            ("admin_area_hierarchy", hierarchy),
        ];
        let registered = date(2024, 1, 1, rng.random_range(0..730));
        let language = LANGUAGES
            .get(region as usize % LANGUAGES.len())
            .copied()
            .unwrap_or("en");
        let citizenship = pick(
            rng,
            &[
                ("CITIZEN", 88),
                ("REFUGEE", 4),
                ("IDP", 4),
                ("RETURNEE", 2),
                ("RESIDENT", 2),
            ],
        );
        let pastoralist = pick(
            rng,
            &[
                ("SETTLED", 85),
                ("SEMI_PASTORALIST", 10),
                ("PASTORALIST", 5),
            ],
        );
        let roaming = matches!(citizenship, "REFUGEE" | "IDP") && rng.random_bool(0.2);
        let tier = pick(rng, &TIERS);
        let coping = rng.random_range(0..15) + (tier.hardship * 10.0) as i32;
        let mobile = pastoralist == "PASTORALIST" || roaming;
        Home {
            id,
            district,
            location,
            registered,
            language,
            citizenship,
            pastoralist,
            mobile,
            tier,
            coping,
        }
    }

    fn individual(&mut self, p: &Person, home: &Home, head: &Person, couple: bool) -> Result<()> {
        let rng = &mut self.rng;
        let adult = p.age >= 18;
        let documented = rng.random_bool(0.9);
        // Any day in the year before the birthday that gives `age` on 2026-01-01.
        let birth = if documented {
            date(2025 - p.age, 1, 2, rng.random_range(0..364))
        } else {
            date(2025 - p.age, 7, 1, 0)
        };
        let nid = (p.age >= 5 || rng.random_bool(0.7)).then(|| {
            (u128::from(p.index) * u128::from(NID_STEP) + u128::from(self.nid_offset))
                % u128::from(NID_SPACE)
        });
        let nid_status = match nid {
            Some(_) => pick(
                rng,
                &[
                    ("VERIFIED", 85),
                    ("PENDING", 12),
                    ("FAILED", 2),
                    ("EXCEPTION", 1),
                ],
            ),
            None => "",
        };
        let evidence = match (nid_status, documented) {
            ("VERIFIED", _) => "FOUNDATIONAL_ID_VERIFIED",
            (_, true) => "DOCUMENT",
            _ => "NONE",
        };
        let (livelihood, employment, occupation) = match p.age {
            ..5 => ("", "", ""),
            5..15 => ("", "STUDENT", "Student"),
            15..18 if rng.random_bool(0.8) => ("", "STUDENT", "Student"),
            65.. if rng.random_bool(0.5) => ("PENSION", "RETIRED", "Retired"),
            _ => pick(rng, &LIVELIHOODS),
        };
        let (second, ..) = pick(rng, &LIVELIHOODS);
        let has_second = !matches!(livelihood, "" | "PENSION" | "UNEMPLOYED" | "OTHER")
            && !matches!(second, "UNEMPLOYED" | "OTHER")
            && second != livelihood
            && rng.random_bool(0.25);
        let marital = match p.age {
            _ if couple => "MARRIED",
            ..16 => "SINGLE",
            55.. => pick(
                rng,
                &[
                    ("WIDOWED", 50),
                    ("MARRIED", 20),
                    ("DIVORCED", 10),
                    ("SINGLE", 10),
                    ("SEPARATED", 10),
                ],
            ),
            _ => pick(
                rng,
                &[
                    ("SINGLE", 60),
                    ("MARRIED", 15),
                    ("DIVORCED", 10),
                    ("SEPARATED", 10),
                    ("UNKNOWN", 5),
                ],
            ),
        };
        let education = match p.age {
            ..5 => "",
            5..12 => "PRIMARY",
            12..18 => "SECONDARY",
            _ => pick(
                rng,
                &[
                    ("NONE", 20),
                    ("PRIMARY", 35),
                    ("SECONDARY", 35),
                    ("TERTIARY", 10),
                ],
            ),
        };
        let contact = match (p.phone, adult) {
            (true, _) => one(rng, &["SMS", "CALL"]),
            (false, true) => "VIA_LOCAL_OFFICE",
            (false, false) => "NONE",
        };
        let plw = p.female && (15..50).contains(&p.age) && rng.random_bool(0.08);
        let displacement = match home.citizenship {
            c @ ("REFUGEE" | "IDP" | "RETURNEE") => c,
            _ => "HOST_COMMUNITY",
        };
        let phone = json!([{"type": "mobile", "number": format!("+9997{:08}", rng.random_range(0..100_000_000)), "is_primary": true}]);
        let mut row = home.location.clone();
        row.extend([
            (
                "foundational_id",
                opt(nid.is_some(), format!("NID{:010}", nid.unwrap_or_default())),
            ),
            (
                "foundational_id_masked",
                opt(
                    nid.is_some(),
                    format!("XXXXXX{:04}", nid.unwrap_or_default() % 10_000),
                ),
            ),
            (
                "foundational_id_verification_status",
                opt(nid.is_some(), nid_status),
            ),
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
            ("phone_numbers", opt(p.phone, phone)),
            ("marital_status", v(marital)),
            ("occupation", opt(!occupation.is_empty(), occupation)),
            ("education_level", opt(!education.is_empty(), education)),
            (
                "income_level",
                opt(
                    adult,
                    pick(
                        rng,
                        &[("LOW", 55), ("MEDIUM", 30), ("HIGH", 5), ("UNKNOWN", 10)],
                    ),
                ),
            ),
            ("language_code", v(home.language)),
            ("registration_date", iso(home.registered)),
            ("citizenship_category", v(home.citizenship)),
            ("relationship_to_head", v(p.role)),
            (
                "residency_status",
                v(pick(
                    rng,
                    &[("USUAL_MEMBER", 95), ("TEMPORARY", 3), ("ABSENT", 2)],
                )),
            ),
            (
                "dependency_indicator",
                v(p.age < 18 || p.age >= 65 || employment == "UNEMPLOYED"),
            ),
            ("preferred_contact_method", v(contact)),
            ("contact_person_name", opt(!adult, head.name())),
            (
                "disability_status",
                v(if p.disabled {
                    "YES"
                } else if rng.random_bool(0.01) {
                    "UNKNOWN"
                } else {
                    "NO"
                }),
            ),
            ("plw_status", opt(p.female, plw)),
            ("plw_status_date", opt(plw, iso(home.registered))),
            (
                "orphanhood_flag",
                v(!adult && p.role != "CHILD" && rng.random_bool(0.3)),
            ),
            (
                "chronic_illness_flag",
                v(rng.random_bool(if p.age >= 60 { 0.2 } else { 0.05 })),
            ),
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
        ]);
        self.emit("individual", Some(&p.id), &home.id, &row)
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
            pick(rng, &[(1usize, 70), (2, 20), (3, 10)]),
        );
        for k in (0..domains).filter(|_| p.disabled) {
            let domain = DOMAINS
                .get((first + k) % DOMAINS.len())
                .copied()
                .unwrap_or("MOBILITY");
            let severity = pick(
                &mut self.rng,
                &[
                    ("SOME_DIFFICULTY", 55),
                    ("A_LOT_OF_DIFFICULTY", 35),
                    ("CANNOT_DO_AT_ALL", 10),
                ],
            );
            self.emit(
                "disability",
                None,
                &p.id,
                &[
                    ("disability_domain", v(domain)),
                    ("disability_severity", v(severity)),
                ],
            )?;
        }
        let rng = &mut self.rng;
        if p.age >= 18 {
            // Refugees withhold DCI sharing and bar enforcement use, as in the bundled sample.
            let (captured, refugee) = (rng.random_bool(0.95), home.citizenship == "REFUGEE");
            let scope = if refugee {
                json!(["social_protection"])
            } else {
                json!(["social_protection", "dci_sharing"])
            };
            let method = pick(
                rng,
                &[
                    ("SIGNED", 40),
                    ("VERBAL", 25),
                    ("DIGITAL", 20),
                    ("BIOMETRIC", 15),
                ],
            );
            let restriction =
                json!([{"partner": "ministry-of-interior", "purpose": "enforcement"}]);
            let row = [
                ("consent_captured", v(captured)),
                ("consent_date", opt(captured, iso(home.registered))),
                ("consent_scope", opt(captured, scope)),
                ("consent_method", opt(captured, method)),
                (
                    "data_sharing_restrictions",
                    opt(captured && refugee, restriction),
                ),
            ];
            self.emit("consent", None, &p.id, &row)?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.1) {
            let when = date(2024, 7, 1, rng.random_range(0..540));
            let kind = pick(
                rng,
                &[
                    ("DROUGHT", 20),
                    ("FLOOD", 12),
                    ("CONFLICT", 6),
                    ("ILLNESS", 18),
                    ("DEATH_OF_EARNER", 4),
                    ("JOB_LOSS", 8),
                    ("PRICE_SHOCK", 14),
                    ("CROP_FAILURE", 10),
                    ("LIVESTOCK_LOSS", 5),
                    ("FIRE", 2),
                    ("OTHER", 1),
                ],
            );
            let row = [
                ("shock_type", v(kind)),
                ("shock_date", iso(when)),
                (
                    "shock_period",
                    v(format!("{}-Q{}", when.year(), when.month0() / 3 + 1)),
                ),
                (
                    "coping_strategy",
                    v(one(
                        rng,
                        &[
                            "BORROW",
                            "SELL_ASSETS",
                            "REDUCE_MEALS",
                            "SEEK_AID",
                            "USE_SAVINGS",
                        ],
                    )),
                ),
            ];
            self.emit("shock", None, &p.id, &row)?;
        }
        let rng = &mut self.rng;
        match (p.role, spouse) {
            ("SELF", Some(s)) => {
                let years = rng.random_range(0..=(p.age.min(s.age) - 18).max(0));
                let row = [
                    ("relationship_type", v("SPOUSES")),
                    ("person1", v(p.id.as_str())),
                    ("person2", v(s.id.as_str())),
                    ("is_married", v(true)),
                    (
                        "married_on",
                        iso(date(2025 - years, 1, 1, rng.random_range(0..365))),
                    ),
                    ("is_separated", v(false)),
                ];
                self.emit("relationship", None, &p.id, &row)?;
            }
            ("CHILD", _) => {
                let row = [
                    ("relationship_type", v("PARENTS")),
                    ("parent1", v(head.id.as_str())),
                    ("parent2", spouse.map_or(Value::Null, |s| v(s.id.as_str()))),
                    ("is_adopted", v(rng.random_bool(0.02))),
                ];
                self.emit("relationship", None, &p.id, &row)?;
            }
            _ => {}
        }
        let rng = &mut self.rng;
        if p.role == "SELF" && rng.random_bool(0.02) {
            let submitted = date(2025, 1, 1, rng.random_range(0..330));
            let status = pick(
                rng,
                &[
                    ("OPEN", 20),
                    ("IN_PROGRESS", 20),
                    ("RESOLVED", 45),
                    ("CLOSED", 10),
                    ("REJECTED", 5),
                ],
            );
            let closed = matches!(status, "RESOLVED" | "CLOSED" | "REJECTED");
            let case = self
                .tables
                .iter()
                .find(|t| t.def.name == "grievance")
                .map_or(0, |t| t.rows + 1);
            let row = [
                ("grievance_case_id", v(format!("GRV-CASE-2026-{case:07}"))),
                (
                    "grievance_type",
                    v(one(
                        rng,
                        &[
                            "PAYMENT_DELAY",
                            "EXCLUSION_ERROR",
                            "DATA_CORRECTION",
                            "STAFF_CONDUCT",
                        ],
                    )),
                ),
                (
                    "submission_channel",
                    v(one(rng, &["HOTLINE", "LOCAL_OFFICE", "SMS", "WEB"])),
                ),
                ("grievance_status", v(status)),
                ("submission_date", iso(submitted)),
                (
                    "resolution_date",
                    opt(
                        closed,
                        iso(submitted + Duration::days(rng.random_range(3..30))),
                    ),
                ),
                (
                    "resolution_code",
                    opt(
                        closed,
                        if status == "REJECTED" {
                            "NOT_ELIGIBLE"
                        } else {
                            "ADDRESSED"
                        },
                    ),
                ),
                ("protection_referral_flag", v(rng.random_bool(0.05))),
            ];
            self.emit("grievance", None, &p.id, &row)?;
        }
        Ok(())
    }

    fn household_tables(&mut self, home: &Home, size: usize, u5: usize) -> Result<()> {
        let rng = &mut self.rng;
        // Higher is poorer: grows with household size, young children and poor housing.
        let score = 1.0
            + 0.3 * size as f64
            + 0.35 * u5 as f64
            + home.tier.hardship
            + rng.random_range(-0.4..0.4);
        let row = [
            ("pmt_score", v(round(score.clamp(1.0, 6.0), 2))),
            ("pmt_score_type", v("POVERTY")),
            (
                "pmt_variables",
                json!({"size_total": size, "size_children_u5": u5, "dwelling_type": home.tier.dwelling}),
            ),
            (
                "pmt_calculation_date",
                iso(home.registered + Duration::days(rng.random_range(0..60))),
            ),
            ("pmt_model_version", v("PMT-2026-SYN")),
        ];
        self.emit("poverty_score", None, &home.id, &row)?;
        for _ in 0..pick(&mut self.rng, &[(0usize, 25), (1, 50), (2, 25)]) {
            let rng = &mut self.rng;
            let (kind, category) = one(rng, ASSETS);
            let (quantity, hectares) = match kind {
                "LAND" => (1, round(rng.random_range(0.1..5.0), 1)),
                "LIVESTOCK" => (rng.random_range(1..30), 0.0),
                _ => (rng.random_range(1..3), 0.0),
            };
            let band = match (kind, quantity) {
                ("LAND", _) => {
                    if hectares < 1.0 {
                        "0-1ha"
                    } else {
                        "1-5ha"
                    }
                }
                ("LIVESTOCK", ..6) => "1-5 heads",
                ("LIVESTOCK", ..11) => "6-10 heads",
                ("LIVESTOCK", _) => "11+ heads",
                _ => "",
            };
            let row = [
                ("asset_type", v(kind)),
                ("asset_category", v(category)),
                ("quantity", v(quantity)),
                ("size_value", opt(kind == "LAND", hectares)),
                ("size_unit", opt(kind == "LAND", "HECTARE")),
                ("size_band", opt(!band.is_empty(), band)),
            ];
            self.emit("asset", None, &home.id, &row)?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.2) {
            let (name, mnemonic) = one(rng, PROGRAMS);
            let row = [
                ("linked_register_mnemonic", v("Household")),
                ("program_name", v(name)),
                ("program_mnemonic", v(mnemonic)),
                (
                    "program_start_date",
                    iso(date(2023, 1, 1, rng.random_range(0..1000))),
                ),
                (
                    "payment_channel_preference",
                    v(pick(
                        rng,
                        &[
                            ("MOBILE_MONEY", 45),
                            ("BANK", 20),
                            ("CASH", 30),
                            ("OTHER", 5),
                        ],
                    )),
                ),
                (
                    "payment_verification_status",
                    v(pick(
                        rng,
                        &[("VERIFIED", 80), ("PENDING", 15), ("FAILED", 5)],
                    )),
                ),
            ];
            self.emit("program_participation", None, &home.id, &row)?;
        }
        let rng = &mut self.rng;
        if rng.random_bool(0.1) {
            let verified = home.registered + Duration::days(rng.random_range(30..400));
            let at = format!(
                "{}T{:02}:{:02}:00Z",
                verified.format("%Y-%m-%d"),
                rng.random_range(8..17),
                rng.random_range(0..60)
            );
            let row = [
                ("linked_register_mnemonic", v("Household")),
                (
                    "update_trigger",
                    v(one(
                        rng,
                        &["PERIODIC_UPDATE", "GRIEVANCE_FOLLOW_UP", "ON_DEMAND_UPDATE"],
                    )),
                ),
                (
                    "data_source",
                    v(one(rng, &["FIELD_VERIFICATION", "FOUNDATIONAL_ID"])),
                ),
                (
                    "enumerator_id",
                    v(format!(
                        "ENUM-{:03}{:02}",
                        home.district + 1,
                        rng.random_range(0..20)
                    )),
                ),
                (
                    "office_location_code",
                    v(format!("D{:03}", home.district + 1)),
                ),
                (
                    "verification_status",
                    v(pick(
                        rng,
                        &[("VERIFIED", 85), ("PENDING", 10), ("FAILED", 5)],
                    )),
                ),
                (
                    "verification_method",
                    v(one(rng, &["HOME_VISIT", "ID_API_CHECK", "PHONE_CALL"])),
                ),
                ("verified_at", v(at)),
            ];
            self.emit("verification_history", None, &home.id, &row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::{Fields, parse_cell, validate_fields};
    use std::collections::{BTreeSet, HashMap};

    fn registers() -> Registers {
        Registers::load_dir(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/specs/registers"
        )))
        .unwrap()
    }

    fn run(households: u64, seed: u64) -> (tempfile::TempDir, GenerateSummary) {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(
            &registers(),
            &GenerateOptions {
                households,
                seed,
                out: dir.path().join("out"),
            },
        )
        .unwrap();
        (dir, summary)
    }

    /// The header and every row of `<register>.csv`, as maps from column to cell.
    fn read(
        summary: &GenerateSummary,
        register: &str,
    ) -> (Vec<String>, Vec<HashMap<String, String>>) {
        let file = summary
            .files
            .iter()
            .find(|f| f.register == register)
            .unwrap();
        let mut reader = csv::Reader::from_path(&file.path).unwrap();
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<HashMap<String, String>> = reader
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
            "{register}: summary row count"
        );
        (header, rows)
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let ((_a, first), (_b, again), (_c, other)) = (run(60, 7), run(60, 7), run(60, 8));
        let names: Vec<&str> = first.files.iter().map(|f| f.register.as_str()).collect();
        assert_eq!(names.get(..2), Some(&["household", "individual"][..]));
        assert_eq!(names.len(), registers().names().count());
        for (x, y) in first.files.iter().zip(&again.files) {
            assert_eq!(
                std::fs::read(&x.path).unwrap(),
                std::fs::read(&y.path).unwrap(),
                "{}",
                x.register
            );
        }
        let individuals = |s: &GenerateSummary| std::fs::read(&s.files[1].path).unwrap();
        assert_ne!(individuals(&first), individuals(&other));
    }

    #[test]
    fn households_agree_with_their_members() {
        let (_dir, summary) = run(200, 42);
        let (_, households) = read(&summary, "household");
        let (_, individuals) = read(&summary, "individual");
        assert_eq!(households.len(), 200);
        let mut members: HashMap<&str, Vec<&HashMap<String, String>>> = HashMap::new();
        for person in &individuals {
            members
                .entry(person["parent_id"].as_str())
                .or_default()
                .push(person);
        }
        let household_ids: BTreeSet<&str> = households.iter().map(|h| h["id"].as_str()).collect();
        assert!(
            members.keys().all(|parent| household_ids.contains(parent)),
            "an individual's household is missing"
        );
        for hh in &households {
            let people = &members[hh["id"].as_str()];
            let ages: Vec<i64> = people
                .iter()
                .map(|p| p["estimated_age"].parse().unwrap())
                .collect();
            let n = |f: &dyn Fn(i64) -> bool| ages.iter().filter(|a| f(**a)).count().to_string();
            assert_eq!(hh["size_total"], people.len().to_string());
            assert_eq!(hh["size_adults"], n(&|a| a >= 18));
            assert_eq!(hh["size_children_u5"], n(&|a| a < 5));
            assert_eq!(hh["size_school_age"], n(&|a| (5..18).contains(&a)));
            assert_eq!(hh["size_elderly"], n(&|a| a >= 60));
            let women = people.iter().filter(|p| p["gender"] == "FEMALE").count();
            assert_eq!(hh["number_of_female_members"], women.to_string());
            let head = people.first().unwrap();
            assert_eq!(
                (head["relationship_to_head"].as_str(), &head["id"]),
                ("SELF", &hh["household_head_id"])
            );
            assert_eq!(hh["household_head_name"], head["full_name"]);
            assert_eq!(
                people
                    .iter()
                    .filter(|p| p["relationship_to_head"] == "SELF")
                    .count(),
                1
            );
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
        for file in summary.files.iter().skip(2) {
            for row in read(&summary, &file.register).1 {
                let parent = row["parent_id"].as_str();
                assert!(
                    individual_ids.contains(parent) || household_ids.contains(parent),
                    "{}: {parent}",
                    file.register
                );
            }
        }
    }

    #[test]
    fn foundational_ids_are_unique() {
        let (_dir, summary) = run(300, 3);
        let (_, individuals) = read(&summary, "individual");
        let ids: Vec<&str> = individuals
            .iter()
            .map(|p| p["foundational_id"].as_str())
            .filter(|id| !id.is_empty())
            .collect();
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 13 && id.starts_with("NID")));
        let missing = 1.0 - ids.len() as f64 / individuals.len() as f64;
        assert!(
            (0.005..0.08).contains(&missing),
            "{missing} have no foundational id"
        );
        let functional: BTreeSet<&str> = individuals.iter().map(|p| p["id"].as_str()).collect();
        assert_eq!(functional.len(), individuals.len());
        let nids: BTreeSet<u64> = (0..100_000)
            .map(|i| (i * NID_STEP + 12_345) % NID_SPACE)
            .collect();
        assert_eq!(nids.len(), 100_000);
        let generated: BTreeSet<String> = (0..100_000)
            .map(|i| ids::generate("IND-", scramble(i, 99)))
            .collect();
        assert_eq!(generated.len(), 100_000);
    }

    #[test]
    fn every_cell_passes_the_registers_validation() {
        let registers = registers();
        let (_dir, summary) = run(200, 11);
        for file in &summary.files {
            let def = registers.get(&file.register).unwrap();
            let (header, rows) = read(&summary, &file.register);
            let expected: Vec<&str> = ["id", "parent_id", "status"]
                .into_iter()
                .chain(def.fields.iter().map(|f| f.name.as_str()))
                .collect();
            assert_eq!(header, expected);
            for row in &rows {
                assert!(
                    row["id"].starts_with(&def.prefix)
                        && ids::check_supplied(def, &row["id"]).is_ok(),
                    "{}",
                    row["id"]
                );
                assert!(matches!(row["status"].as_str(), "ACTIVE" | "INACTIVE"));
                let mut fields = Fields::new();
                for field in def.fields.iter().filter(|f| !row[&f.name].is_empty()) {
                    let value = parse_cell(field, &row[&field.name])
                        .unwrap_or_else(|p| panic!("{}: {p}", file.register));
                    fields.insert(field.name.clone(), value);
                }
                let problems = validate_fields(def, &fields);
                assert!(
                    problems.is_empty(),
                    "{} {}: {problems:?}",
                    file.register,
                    row["id"]
                );
            }
            if file.register != "grievance" {
                assert!(!rows.is_empty(), "{} has no rows", file.register);
            }
        }
    }
}

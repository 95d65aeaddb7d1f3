//! Price files for `opsdeck pricing import FILE`: recognising the format and turning LiteLLM's
//! `model_prices_and_context_window.json`, `[[pricing]]` TOML tables or a CSV sheet into checked
//! [`PriceRow`]s. Pure: it is handed the text and returns rows plus the entries it passed over
//! and why; storing them is the caller's business.
//!
//! Whole-file problems (unreadable syntax, a CSV header without a needed column) are an
//! [`ImportError`]; a bad entry is only [`Skipped`], so one odd model in a 2,000-model file does
//! not block the rest. Provider, sku and unit are trimmed and lowercased in every format, as ids
//! are lowercase throughout; whatever still fails [`check_provider`], [`check_sku`] or
//! [`check_unit`] is skipped with the check's message.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::{PriceRow, check_provider, check_sku, check_unit};
use crate::money::{PICO, parse_scaled};

/// The price file formats `pricing import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LiteLLM's `model_prices_and_context_window.json`.
    LiteLlm,
    /// `[[pricing]]` tables shaped like the config's.
    Toml,
    /// A `provider,sku,unit,price[,effective_from]` sheet with a header row.
    Csv,
}

/// What a price file yielded: the rows to store and the entries left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub rows: Vec<PriceRow>,
    pub skipped: Vec<Skipped>,
}

/// An entry that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where it was, for a person: a model name, `line 7`, `pricing[2]`.
    pub entry: String,
    pub reason: String,
}

/// A file that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("a LiteLLM price file is a JSON object of model names to prices, not {found}")]
    NotAnObject { found: &'static str },
    /// The toml crate's message, which shows the line, column and the offending text.
    #[error("{0}")]
    Toml(String),
    #[error("{0}")]
    TomlShape(String),
    #[error("the CSV file has no header row; it needs provider,sku,unit,price[,effective_from]")]
    CsvNoHeader,
    #[error(
        "the CSV header has no `{0}` column; it needs provider, sku, unit and price, and may have \
         effective_from"
    )]
    CsvMissingColumn(&'static str),
    #[error("CSV header on line {line}: {message}")]
    CsvHeader { line: usize, message: String },
}

/// Picks the format from the file's extension, or failing that from its first bytes.
pub fn detect(file_name: &str, text: &str) -> Format {
    let extension = Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("json") => return Format::LiteLlm,
        Some("toml") => return Format::Toml,
        Some("csv") => return Format::Csv,
        _ => {}
    }
    let text = strip_bom(text);
    if text.trim_start().starts_with('{') {
        return Format::LiteLlm;
    }
    // TOML allows `[[ pricing ]]` and a trailing comment on the header line.
    let is_pricing_header = |line: &str| {
        let code = line.split('#').next().unwrap_or_default();
        code.chars()
            .filter(|c| !c.is_whitespace())
            .eq("[[pricing]]".chars())
    };
    if text.lines().any(is_pricing_header) {
        Format::Toml
    } else {
        Format::Csv
    }
}

/// Reads a price file of the given format.
pub fn parse(format: Format, text: &str) -> Result<Parsed, ImportError> {
    // Spreadsheet exports start with a byte-order mark that no parser here expects, and positions
    // in error messages should match what an editor shows.
    let text = strip_bom(text);
    let mut out = Collected::default();
    match format {
        Format::LiteLlm => parse_litellm(text, &mut out)?,
        Format::Toml => parse_toml(text, &mut out)?,
        Format::Csv => parse_csv(text, &mut out)?,
    }
    Ok(out.finish())
}

/// Parses a date (`2026-01-01`, midnight UTC) or an RFC 3339 time with an offset
/// (`2026-01-01T09:30:00+02:00`) into UTC milliseconds.
pub fn parse_effective_from(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let at = if let Ok(date) = Date::parse(t, DATE) {
        date.midnight().assume_utc()
    } else if let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) {
        at
    } else {
        return Err(format!(
            "{text:?} is not a date such as 2026-01-01 or an RFC 3339 time with an offset such \
             as 2026-01-01T09:30:00Z"
        ));
    };
    utc_ms(at)
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn utc_ms(at: OffsetDateTime) -> Result<i64, String> {
    // Floor, not truncation, so a time just before 1970 does not round up to a later millisecond.
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| format!("{at} is out of range"))
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Rows found so far, each with the entry it came from so that duplicates can be named.
#[derive(Default)]
struct Collected {
    found: Vec<(String, PriceRow)>,
    skipped: Vec<Skipped>,
}

impl Collected {
    fn row(&mut self, entry: &str, row: PriceRow) {
        self.found.push((entry.to_string(), row));
    }

    fn skip(&mut self, entry: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            entry: entry.to_string(),
            reason: reason.into(),
        });
    }

    /// Resolves rows that would share a `prices` row, which is unique by provider, sku and date:
    /// identical ones are kept once, and differing ones are all left out, since picking one
    /// would be a guess about which the file meant.
    fn finish(self) -> Parsed {
        let Collected { found, mut skipped } = self;
        let key = |row: &PriceRow| (row.provider.clone(), row.sku.clone(), row.effective_from);
        let mut groups: HashMap<_, Vec<usize>> = HashMap::new();
        for (i, (_, row)) in found.iter().enumerate() {
            groups.entry(key(row)).or_default().push(i);
        }
        let mut rows = Vec::with_capacity(found.len());
        for (i, (entry, row)) in found.iter().enumerate() {
            let group = &groups[&key(row)];
            let first = group[0];
            if group.len() == 1 {
                rows.push(row.clone());
            } else if group.iter().all(|&j| found[j].1 == found[first].1) {
                if i == first {
                    rows.push(row.clone());
                } else {
                    skipped.push(Skipped {
                        entry: entry.clone(),
                        reason: format!(
                            "{} {} has the same price in {}; imported once",
                            row.provider, row.sku, found[first].0
                        ),
                    });
                }
            } else {
                let others: Vec<&str> = group
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| found[j].0.as_str())
                    .collect();
                skipped.push(Skipped {
                    entry: entry.clone(),
                    reason: format!(
                        "{} {} has a different unit or price in {}; none of them is imported",
                        row.provider,
                        row.sku,
                        others.join(", ")
                    ),
                });
            }
        }
        Parsed { rows, skipped }
    }
}

/// Checks and normalises one row's fields; the error names the field at fault.
fn make_row(
    provider: &str,
    sku: &str,
    unit: &str,
    price: &str,
    effective_from: Option<i64>,
) -> Result<PriceRow, String> {
    let provider = provider.trim().to_ascii_lowercase();
    let sku = sku.trim().to_ascii_lowercase();
    let unit = unit.trim().to_ascii_lowercase();
    check_provider(&provider)?;
    check_sku(&sku)?;
    check_unit(&unit)?;
    let price_pico = parse_scaled(price, PICO).map_err(|e| format!("price {e}"))?;
    Ok(PriceRow {
        provider,
        sku,
        unit,
        price_pico,
        effective_from,
    })
}

// ---------------------------------------------------------------------------------------------
// LiteLLM

/// The LiteLLM keys imported, as (key, sku suffix after the model name, unit). Every other key
/// (cached, batch, priority, above-128k tiers, per-pixel, per-query, audio tokens) has no
/// counterpart in a flat unit price and is ignored. Order is precedence: when two keys would
/// price the same sku in different units, the first present one claims it, because `prices` holds
/// one unit per sku and tokens are what LLM usage is counted in.
const LITELLM_PRICES: &[(&str, &str, &str)] = &[
    ("input_cost_per_token", "/input", "token"),
    ("output_cost_per_token", "/output", "token"),
    ("input_cost_per_character", "/input", "character"),
    ("output_cost_per_character", "/output", "character"),
    ("input_cost_per_second", "/input", "second"),
    ("output_cost_per_second", "/output", "second"),
    // An image generated is the model's product, so it is priced under the bare model name.
    ("output_cost_per_image", "", "image"),
    // Vision models list a per-image input price next to their per-token one; a sku of its own
    // keeps both.
    ("input_cost_per_image", "/input-image", "image"),
];

/// The file's first entry documents the schema with placeholder values; it is not a model.
const LITELLM_SAMPLE: &str = "sample_spec";

/// JSON values kept as their source text. Prices are read from the digits the file wrote, not
/// from an f64: serde_json's default float parsing is only nearly exact (it lacks the
/// `float_roundtrip` feature), so a long value such as `1.5000999999999998e-07` could come back
/// as `1.5001e-7` and be imported as a price the file does not state. `raw_value` is enabled by
/// axum and sqlx; naming it in Cargo.toml would make that explicit.
type RawMap = BTreeMap<String, Box<RawValue>>;

fn parse_litellm(text: &str, out: &mut Collected) -> Result<(), ImportError> {
    // Reading into one raw value first checks the syntax of the whole file, so the only way the
    // second read can fail is a top level that is not an object.
    let whole: Box<RawValue> = serde_json::from_str(text).map_err(|e| {
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        ImportError::Json {
            line: e.line(),
            column: e.column(),
            message: message
                .strip_suffix(&position)
                .unwrap_or(&message)
                .to_string(),
        }
    })?;
    let models: RawMap =
        serde_json::from_str(whole.get()).map_err(|_| ImportError::NotAnObject {
            found: json_kind(&whole),
        })?;
    for (name, entry) in &models {
        if name != LITELLM_SAMPLE {
            litellm_entry(name, entry, out);
        }
    }
    Ok(())
}

fn litellm_entry(name: &str, entry: &RawValue, out: &mut Collected) {
    let Ok(fields) = serde_json::from_str::<RawMap>(entry.get()) else {
        out.skip(name, format!("is {}, not an object", json_kind(entry)));
        return;
    };
    let provider = match fields.get("litellm_provider") {
        None => Err("has no litellm_provider".to_string()),
        Some(p) => serde_json::from_str::<String>(p.get())
            .map(|p| p.to_ascii_lowercase())
            .map_err(|_| format!("litellm_provider is {}, not a string", json_kind(p))),
    };
    let provider = match provider {
        Ok(p) => p,
        Err(e) => {
            out.skip(name, e);
            return;
        }
    };
    if let Err(e) = check_provider(&provider) {
        out.skip(name, e);
        return;
    }
    // The name is kept whole, provider prefix and all, since that is what callers send.
    let model = name.to_ascii_lowercase();
    if let Err(e) = check_sku(&model) {
        out.skip(name, e);
        return;
    }

    let mut any_price = false;
    // sku → the key that claimed it, so a second unit for the same sku can be reported.
    let mut claimed: Vec<(String, &str, &str)> = Vec::new();
    for &(key, suffix, unit) in LITELLM_PRICES {
        let Some(raw) = fields.get(key) else {
            continue;
        };
        let text = match json_kind(raw) {
            "null" => continue,
            "a number" => Ok(raw.get().to_string()),
            // LiteLLM writes numbers, but a decimal string says the same thing.
            "a string" => serde_json::from_str::<String>(raw.get()).map_err(|e| e.to_string()),
            other => Err(format!("{key} is {other}, not a number")),
        };
        any_price = true;
        let sku = format!("{model}{suffix}");
        if let Some((_, by, by_unit)) = claimed.iter().find(|(s, _, _)| *s == sku) {
            out.skip(
                name,
                format!(
                    "{key} ignored: {sku} is priced per {by_unit} by {by}, and a sku has one unit"
                ),
            );
            continue;
        }
        claimed.push((sku.clone(), key, unit));
        match text.and_then(|t| {
            make_row(&provider, &sku, unit, &t, None).map_err(|e| format!("{key}: {e}"))
        }) {
            Ok(row) => out.row(name, row),
            Err(e) => out.skip(name, e),
        }
    }
    if !any_price {
        out.skip(name, "no per-token/image/character/second price");
    }
}

/// What kind of JSON value a raw value is; its first character decides, as the syntax is valid.
fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

// ---------------------------------------------------------------------------------------------
// TOML

const TOML_KEYS: &[&str] = &["provider", "sku", "unit", "price", "effective_from"];

fn parse_toml(text: &str, out: &mut Collected) -> Result<(), ImportError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ImportError::Toml(e.to_string().trim_end().to_string()))?;
    for key in table.keys().filter(|k| *k != "pricing") {
        out.skip(
            &format!("top-level `{key}`"),
            "not a [[pricing]] table; ignored",
        );
    }
    let Some(pricing) = table.get("pricing") else {
        return Err(ImportError::TomlShape(
            "the file has no [[pricing]] tables".into(),
        ));
    };
    let Some(entries) = pricing.as_array() else {
        return Err(ImportError::TomlShape(format!(
            "`pricing` must be an array of [[pricing]] tables, not {}",
            toml_kind(pricing)
        )));
    };
    for (i, entry) in entries.iter().enumerate() {
        let label = format!("pricing[{i}]");
        match toml_entry(entry) {
            Ok(row) => out.row(&label, row),
            Err(e) => out.skip(&label, e),
        }
    }
    Ok(())
}

fn toml_entry(entry: &toml::Value) -> Result<PriceRow, String> {
    let Some(fields) = entry.as_table() else {
        return Err(format!("is {}, not a table", toml_kind(entry)));
    };
    let unknown: Vec<String> = fields
        .keys()
        .filter(|k| !TOML_KEYS.contains(&k.as_str()))
        .map(|k| format!("`{k}`"))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown key {} (expected {})",
            unknown.join(", "),
            TOML_KEYS.join(", ")
        ));
    }
    let text = |key: &str| -> Result<&str, String> {
        match fields.get(key) {
            Some(toml::Value::String(s)) => Ok(s),
            Some(other) => Err(format!("{key} must be a string, not {}", toml_kind(other))),
            None => Err(format!("{key} is missing")),
        }
    };
    let price = match fields.get("price") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(toml::Value::Integer(n)) => n.to_string(),
        // Display writes the shortest decimal that reads back as the same float, never an
        // exponent; a string keeps prices with more than 15 digits exact.
        Some(toml::Value::Float(f)) => f.to_string(),
        Some(other) => {
            return Err(format!(
                "price must be a decimal string such as \"0.0045\", not {}",
                toml_kind(other)
            ));
        }
        None => return Err("price is missing".into()),
    };
    let effective_from = match fields.get("effective_from") {
        None => None,
        Some(toml::Value::String(s)) => {
            Some(parse_effective_from(s).map_err(|e| format!("effective_from {e}"))?)
        }
        Some(toml::Value::Datetime(dt)) => {
            Some(toml_datetime_ms(dt).map_err(|e| format!("effective_from {e}"))?)
        }
        Some(other) => {
            return Err(format!(
                "effective_from must be a date or a time, not {}",
                toml_kind(other)
            ));
        }
    };
    make_row(
        text("provider")?,
        text("sku")?,
        text("unit")?,
        &price,
        effective_from,
    )
}

fn toml_kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A native TOML date or offset date-time in UTC milliseconds. Converted field by field rather
/// than through its text, because TOML 1.1 allows `09:30` without seconds, which RFC 3339 does not.
fn toml_datetime_ms(dt: &toml::value::Datetime) -> Result<i64, String> {
    let bad = |e: time::error::ComponentRange| format!("{dt} is not a valid time: {e}");
    let Some(d) = dt.date else {
        return Err(format!("{dt} has no date"));
    };
    let month = Month::try_from(d.month).map_err(bad)?;
    let date = Date::from_calendar_date(i32::from(d.year), month, d.day).map_err(bad)?;
    let Some(t) = dt.time else {
        return utc_ms(date.midnight().assume_utc());
    };
    let Some(offset) = dt.offset else {
        return Err(format!(
            "{dt} has no UTC offset; add Z or ±hh:mm so it names one instant"
        ));
    };
    let offset = match offset {
        toml::value::Offset::Z => UtcOffset::UTC,
        toml::value::Offset::Custom { minutes } => {
            UtcOffset::from_whole_seconds(i32::from(minutes) * 60).map_err(bad)?
        }
    };
    let time = Time::from_hms_nano(
        t.hour,
        t.minute,
        t.second.unwrap_or(0),
        t.nanosecond.unwrap_or(0),
    )
    .map_err(bad)?;
    utc_ms(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

// ---------------------------------------------------------------------------------------------
// CSV

const CSV_REQUIRED: [&str; 4] = ["provider", "sku", "unit", "price"];
const CSV_OPTIONAL: &str = "effective_from";

/// Column positions of a CSV file's fields.
struct CsvColumns {
    provider: usize,
    sku: usize,
    unit: usize,
    price: usize,
    effective_from: Option<usize>,
    count: usize,
}

fn parse_csv(text: &str, out: &mut Collected) -> Result<(), ImportError> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| {
            let t = line.trim_start();
            !t.is_empty() && !t.starts_with('#')
        });
    let Some((header_line, header)) = lines.next() else {
        return Err(ImportError::CsvNoHeader);
    };
    let columns = csv_header(header_line, header)?;
    for (number, line) in lines {
        let label = format!("line {number}");
        match csv_row(&columns, line) {
            Ok(row) => out.row(&label, row),
            Err(e) => out.skip(&label, e),
        }
    }
    Ok(())
}

fn csv_header(line: usize, header: &str) -> Result<CsvColumns, ImportError> {
    let bad = |message: String| ImportError::CsvHeader { line, message };
    let names = split_csv_line(header).map_err(bad)?;
    let mut positions: HashMap<&'static str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        let Some(known) = CSV_REQUIRED
            .iter()
            .chain(std::iter::once(&CSV_OPTIONAL))
            .copied()
            .find(|k| *k == name)
        else {
            // An unknown column is refused rather than ignored: a misspelt `effective_from`
            // would otherwise date every price at import time without a word.
            return Err(bad(if name.is_empty() {
                format!("column {} has no name", i + 1)
            } else {
                format!(
                    "unknown column `{name}`; the columns are provider, sku, unit, price and \
                     optionally effective_from"
                )
            }));
        };
        if positions.insert(known, i).is_some() {
            return Err(bad(format!("column `{known}` appears twice")));
        }
    }
    let required = |name: &'static str| {
        positions
            .get(name)
            .copied()
            .ok_or(ImportError::CsvMissingColumn(name))
    };
    Ok(CsvColumns {
        provider: required("provider")?,
        sku: required("sku")?,
        unit: required("unit")?,
        price: required("price")?,
        effective_from: positions.get(CSV_OPTIONAL).copied(),
        count: names.len(),
    })
}

fn csv_row(columns: &CsvColumns, line: &str) -> Result<PriceRow, String> {
    let fields = split_csv_line(line)?;
    if fields.len() != columns.count {
        return Err(format!(
            "has {} fields; the header has {}",
            fields.len(),
            columns.count
        ));
    }
    let effective_from = match columns.effective_from.map(|i| fields[i].trim()) {
        None | Some("") => None,
        Some(t) => Some(parse_effective_from(t).map_err(|e| format!("effective_from {e}"))?),
    };
    make_row(
        &fields[columns.provider],
        &fields[columns.sku],
        &fields[columns.unit],
        &fields[columns.price],
        effective_from,
    )
}

/// Splits one CSV line: comma-separated, a field may be enclosed in double quotes with `""`
/// standing for a quote, and spaces around a field are dropped. Quoted fields may not span lines:
/// no id, unit, price or date contains a newline, and it keeps every error on its own line number.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed on this line".into()),
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            fields.push(field);
            match chars.next() {
                None => return Ok(fields),
                Some(',') => {}
                Some(c) => {
                    return Err(format!(
                        "{c:?} after a closing quote; a quoted field must end at a comma"
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "a quote inside an unquoted field; quote the whole field and write \
                             the quote as \"\""
                                .into(),
                        );
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim_end().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(provider: &str, sku: &str, unit: &str, price_pico: i64) -> PriceRow {
        PriceRow {
            provider: provider.into(),
            sku: sku.into(),
            unit: unit.into(),
            price_pico,
            effective_from: None,
        }
    }

    fn find<'a>(parsed: &'a Parsed, sku: &str) -> Option<&'a PriceRow> {
        parsed.rows.iter().find(|r| r.sku == sku)
    }

    fn reasons_for<'a>(parsed: &'a Parsed, entry: &str) -> Vec<&'a str> {
        parsed
            .skipped
            .iter()
            .filter(|s| s.entry == entry)
            .map(|s| s.reason.as_str())
            .collect()
    }

    /// Entries copied from BerriAI/litellm's model_prices_and_context_window.json (2026), chosen
    /// for the shapes they show; `sample_spec` is shortened.
    const LITELLM_EXCERPT: &str = r#"{
    "sample_spec": {
        "code_interpreter_cost_per_session": 0.0,
        "input_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "max_input_tokens": "max input tokens, if the provider specifies it. if not default to max_tokens",
        "mode": "one of: chat, embedding, completion, image_generation, audio_transcription, audio_speech, image_generation, moderation, rerank, search",
        "output_cost_per_token": 0.0,
        "search_context_cost_per_query": {
            "search_context_size_high": 0.0,
            "search_context_size_low": 0.0,
            "search_context_size_medium": 0.0
        },
        "supported_regions": [
            "global",
            "us-west-2"
        ],
        "supports_vision": true
    },
    "aiml/dall-e-3": {
        "litellm_provider": "aiml",
        "metadata": {
            "notes": "DALL-E 3 via AI/ML API - High-quality text-to-image generation"
        },
        "mode": "image_generation",
        "output_cost_per_image": 0.052,
        "source": "https://docs.aimlapi.com/",
        "supported_endpoints": [
            "/v1/images/generations"
        ]
    },
    "databricks/databricks-gemma-3-12b": {
        "input_cost_per_token": 1.5000999999999998e-07,
        "input_dbu_cost_per_token": 2.1429999999999996e-06,
        "litellm_provider": "databricks",
        "max_input_tokens": 128000,
        "max_output_tokens": 32000,
        "max_tokens": 32000,
        "metadata": {
            "notes": "Input/output cost per token is dbu cost * $0.070. Number provided for reference, '*_dbu_cost_per_token' used in actual calculation."
        },
        "mode": "chat",
        "output_cost_per_token": 5.0001e-07,
        "output_dbu_cost_per_token": 7.143e-06,
        "source": "https://www.databricks.com/product/pricing/foundation-model-serving"
    },
    "dataforseo/search": {
        "input_cost_per_query": 0.003,
        "litellm_provider": "dataforseo",
        "mode": "search"
    },
    "deepgram/nova-2": {
        "input_cost_per_second": 7.167e-05,
        "litellm_provider": "deepgram",
        "metadata": {
            "calculation": "$0.0043/60 seconds = $0.00007167 per second",
            "original_pricing_per_minute": 0.0043
        },
        "mode": "audio_transcription",
        "output_cost_per_second": 0.0,
        "source": "https://deepgram.com/pricing",
        "supported_endpoints": [
            "/v1/audio/transcriptions"
        ]
    },
    "gpt-4o": {
        "cache_read_input_token_cost": 1.25e-06,
        "cache_read_input_token_cost_priority": 2.125e-06,
        "input_cost_per_token": 2.5e-06,
        "input_cost_per_token_batches": 1.25e-06,
        "input_cost_per_token_priority": 4.25e-06,
        "litellm_provider": "openai",
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "max_tokens": 16384,
        "mode": "chat",
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_batches": 5e-06,
        "output_cost_per_token_priority": 1.7e-05,
        "supports_function_calling": true,
        "supports_parallel_function_calling": true,
        "supports_pdf_input": true,
        "supports_prompt_caching": true,
        "supports_response_schema": true,
        "supports_system_messages": true,
        "supports_tool_choice": true,
        "supports_vision": true
    },
    "standard/1024-x-1024/dall-e-3": {
        "input_cost_per_pixel": 3.81469e-08,
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_pixel": 0.0
    },
    "text-embedding-004": {
        "deprecation_date": "2026-01-14",
        "input_cost_per_character": 2.5e-08,
        "input_cost_per_token": 1e-07,
        "litellm_provider": "vertex_ai-embedding-models",
        "max_input_tokens": 2048,
        "max_tokens": 2048,
        "mode": "embedding",
        "output_cost_per_token": 0,
        "output_vector_size": 768,
        "source": "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/models"
    },
    "together_ai/baai/bge-base-en-v1.5": {
        "input_cost_per_token": 8e-09,
        "litellm_provider": "together_ai",
        "max_input_tokens": 512,
        "mode": "embedding",
        "output_cost_per_token": 0.0,
        "output_vector_size": 768
    },
    "together_ai/BAAI/bge-base-en-v1.5": {
        "input_cost_per_token": 8e-09,
        "litellm_provider": "together_ai",
        "max_input_tokens": 512,
        "mode": "embedding",
        "output_cost_per_token": 0.0,
        "output_vector_size": 768
    },
    "together_ai/togethercomputer/CodeLlama-34b-Instruct": {
        "litellm_provider": "together_ai",
        "mode": "chat",
        "supports_function_calling": true,
        "supports_parallel_function_calling": true,
        "supports_tool_choice": true
    },
    "tts-1": {
        "input_cost_per_character": 1.5e-05,
        "litellm_provider": "openai",
        "mode": "audio_speech",
        "supported_endpoints": [
            "/v1/audio/speech"
        ]
    },
    "vertex_ai/chirp": {
        "input_cost_per_character": 3e-05,
        "litellm_provider": "vertex_ai",
        "mode": "audio_speech",
        "source": "https://cloud.google.com/text-to-speech/pricing",
        "supported_endpoints": [
            "/v1/audio/speech"
        ]
    },
    "vertex_ai/claude-3-5-haiku@20241022": {
        "input_cost_per_token": 1e-06,
        "litellm_provider": "vertex_ai-anthropic_models",
        "max_input_tokens": 200000,
        "max_output_tokens": 8192,
        "max_tokens": 8192,
        "mode": "chat",
        "output_cost_per_token": 5e-06,
        "supports_assistant_prefill": true,
        "supports_function_calling": true,
        "supports_pdf_input": true,
        "supports_tool_choice": true
    },
    "whisper-1": {
        "input_cost_per_second": 0.0001,
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "output_cost_per_second": 0.0001,
        "supported_endpoints": [
            "/v1/audio/transcriptions"
        ]
    },
    "xai/grok-2-vision": {
        "input_cost_per_image": 2e-06,
        "input_cost_per_token": 2e-06,
        "litellm_provider": "xai",
        "max_input_tokens": 32768,
        "max_output_tokens": 32768,
        "max_tokens": 32768,
        "mode": "chat",
        "output_cost_per_token": 1e-05,
        "supports_function_calling": true,
        "supports_tool_choice": true,
        "supports_vision": true,
        "supports_web_search": true
    }
}"#;

    #[test]
    fn litellm_excerpt_maps_each_price_kind() {
        let p = parse(Format::LiteLlm, LITELLM_EXCERPT).unwrap();
        let expected = [
            row("aiml", "aiml/dall-e-3", "image", 52_000_000_000),
            row(
                "databricks",
                "databricks/databricks-gemma-3-12b/output",
                "token",
                500_010,
            ),
            row("deepgram", "deepgram/nova-2/input", "second", 71_670_000),
            row("deepgram", "deepgram/nova-2/output", "second", 0),
            row("openai", "gpt-4o/input", "token", 2_500_000),
            row("openai", "gpt-4o/output", "token", 10_000_000),
            row(
                "vertex_ai-embedding-models",
                "text-embedding-004/input",
                "token",
                100_000,
            ),
            row(
                "vertex_ai-embedding-models",
                "text-embedding-004/output",
                "token",
                0,
            ),
            row(
                "together_ai",
                "together_ai/baai/bge-base-en-v1.5/input",
                "token",
                8_000,
            ),
            row(
                "together_ai",
                "together_ai/baai/bge-base-en-v1.5/output",
                "token",
                0,
            ),
            row("openai", "tts-1/input", "character", 15_000_000),
            row(
                "vertex_ai",
                "vertex_ai/chirp/input",
                "character",
                30_000_000,
            ),
            row("openai", "whisper-1/input", "second", 100_000_000),
            row("openai", "whisper-1/output", "second", 100_000_000),
            row("xai", "xai/grok-2-vision/input", "token", 2_000_000),
            row("xai", "xai/grok-2-vision/output", "token", 10_000_000),
            row("xai", "xai/grok-2-vision/input-image", "image", 2_000_000),
            row(
                "vertex_ai-anthropic_models",
                "vertex_ai/claude-3-5-haiku@20241022/input",
                "token",
                1_000_000,
            ),
            row(
                "vertex_ai-anthropic_models",
                "vertex_ai/claude-3-5-haiku@20241022/output",
                "token",
                5_000_000,
            ),
        ];
        for want in &expected {
            assert_eq!(find(&p, &want.sku), Some(want), "{}", want.sku);
        }
        assert_eq!(p.rows.len(), expected.len(), "{:#?}", p.rows);
        assert!(p.rows.iter().all(|r| r.effective_from.is_none()));
    }

    #[test]
    fn litellm_excerpt_reports_what_it_leaves_out() {
        let p = parse(Format::LiteLlm, LITELLM_EXCERPT).unwrap();
        assert!(reasons_for(&p, "sample_spec").is_empty(), "silently");
        let no_price = "no per-token/image/character/second price";
        for entry in [
            "standard/1024-x-1024/dall-e-3",
            "dataforseo/search",
            "together_ai/togethercomputer/CodeLlama-34b-Instruct",
        ] {
            assert_eq!(reasons_for(&p, entry), [no_price], "{entry}");
        }
        let noisy = reasons_for(&p, "databricks/databricks-gemma-3-12b");
        assert_eq!(noisy.len(), 1);
        assert!(noisy[0].starts_with("input_cost_per_token: "), "{noisy:?}");
        assert!(noisy[0].contains("precision"), "{noisy:?}");

        // Versioned model names with '@' are valid skus.
        assert!(reasons_for(&p, "vertex_ai/claude-3-5-haiku@20241022").is_empty());

        let two_units = reasons_for(&p, "text-embedding-004");
        assert_eq!(two_units.len(), 1);
        assert!(
            two_units[0].starts_with("input_cost_per_character ignored")
                && two_units[0].contains("per token by input_cost_per_token"),
            "{two_units:?}"
        );

        // The BTreeMap behind serde_json's Map puts "BAAI" before "baai", so the upper-case
        // entry is the one kept and the other is reported for both its rows.
        let twin = reasons_for(&p, "together_ai/baai/bge-base-en-v1.5");
        assert_eq!(twin.len(), 2, "{twin:?}");
        assert!(twin.iter().all(|r| r.contains("same price")), "{twin:?}");
        assert_eq!(p.skipped.len(), 7, "{:#?}", p.skipped);
    }

    #[test]
    fn dollar_amounts_convert_exactly() {
        let json = r#"{
            "m1": {"litellm_provider": "p", "input_cost_per_token": 0.0045,
                   "output_cost_per_token": 1.5e-07},
            "m2": {"litellm_provider": "p", "input_cost_per_token": 1.5E-7,
                   "output_cost_per_token": "0.0045"}
        }"#;
        let p = parse(Format::LiteLlm, json).unwrap();
        assert_eq!(find(&p, "m1/input").unwrap().price_pico, 4_500_000_000);
        assert_eq!(find(&p, "m1/output").unwrap().price_pico, 150_000);
        assert_eq!(find(&p, "m2/input").unwrap().price_pico, 150_000);
        assert_eq!(find(&p, "m2/output").unwrap().price_pico, 4_500_000_000);

        let csv = "provider,sku,unit,price\nluma,v2,credit,0.0045\nluma,v3,credit,1.5e-7\n";
        let p = parse(Format::Csv, csv).unwrap();
        assert_eq!(find(&p, "v2").unwrap().price_pico, 4_500_000_000);
        assert_eq!(find(&p, "v3").unwrap().price_pico, 150_000);

        let toml = "[[pricing]]\nprovider='luma'\nsku='v2'\nunit='credit'\nprice=0.0045\n\
                    [[pricing]]\nprovider='luma'\nsku='v3'\nunit='credit'\nprice=1.5e-7\n";
        let p = parse(Format::Toml, toml).unwrap();
        assert_eq!(find(&p, "v2").unwrap().price_pico, 4_500_000_000);
        assert_eq!(find(&p, "v3").unwrap().price_pico, 150_000);
    }

    #[test]
    fn json_numbers_are_read_as_written() {
        let forms = [
            ("2.5e-06", 2_500_000),
            ("0.0001", 100_000_000),
            ("1E-5", 10_000_000),
            ("0.0", 0),
            ("0", 0),
            ("15", 15_000_000_000_000),
            ("1e+2", 100_000_000_000_000),
            ("6.25e-09", 6_250),
            ("0.00000250000", 2_500_000),
        ];
        let entries: Vec<String> = forms
            .iter()
            .enumerate()
            .map(|(i, (n, _))| {
                format!(r#""m{i}": {{"litellm_provider": "p", "input_cost_per_token": {n}}}"#)
            })
            .collect();
        let p = parse(Format::LiteLlm, &format!("{{{}}}", entries.join(","))).unwrap();
        for (i, (text, pico)) in forms.iter().enumerate() {
            let sku = format!("m{i}/input");
            assert_eq!(find(&p, &sku).map(|r| r.price_pico), Some(*pico), "{text}");
        }
        // A float's noise digits are what the file says, so they are refused rather than rounded
        // to the price that was probably meant (an f64 read turns this one into 1.5001e-7).
        let p = parse(
            Format::LiteLlm,
            r#"{"m": {"litellm_provider": "p", "input_cost_per_token": 1.5000999999999998e-07}}"#,
        )
        .unwrap();
        assert!(p.rows.is_empty());
        assert_eq!(
            reasons_for(&p, "m"),
            [
                "input_cost_per_token: price \"1.5000999999999998e-07\" has more precision than 12 \
              decimal places"
            ]
        );
    }

    #[test]
    fn litellm_entries_that_cannot_be_priced_are_skipped_with_reasons() {
        let json = r#"{
            "Upper/Model-X": {"litellm_provider": "OpenRouter", "input_cost_per_token": 1e-06},
            "no-provider": {"input_cost_per_token": 1e-06},
            "odd-provider": {"litellm_provider": 5, "input_cost_per_token": 1e-06},
            "bad provider": {"litellm_provider": "a b", "input_cost_per_token": 1e-06},
            "a-list": ["input_cost_per_token"],
            "words": {"litellm_provider": "p", "input_cost_per_token": "cheap",
                      "output_cost_per_token": true},
            "negative": {"litellm_provider": "p", "input_cost_per_token": -1e-06},
            "nulls": {"litellm_provider": "p", "input_cost_per_token": null},
            "free": {"litellm_provider": "p", "input_cost_per_token": 0, "output_cost_per_token": 0.0}
        }"#;
        let p = parse(Format::LiteLlm, json).unwrap();
        assert_eq!(
            find(&p, "upper/model-x/input"),
            Some(&row(
                "openrouter",
                "upper/model-x/input",
                "token",
                1_000_000
            ))
        );
        assert_eq!(find(&p, "free/input").unwrap().price_pico, 0);
        assert_eq!(find(&p, "free/output").unwrap().price_pico, 0);
        assert_eq!(p.rows.len(), 3);

        assert_eq!(reasons_for(&p, "no-provider"), ["has no litellm_provider"]);
        assert_eq!(
            reasons_for(&p, "odd-provider"),
            ["litellm_provider is a number, not a string"]
        );
        assert!(reasons_for(&p, "bad provider")[0].contains("provider \"a b\""));
        assert_eq!(reasons_for(&p, "a-list"), ["is an array, not an object"]);
        let words = reasons_for(&p, "words");
        assert_eq!(words.len(), 2, "{words:?}");
        assert!(
            words[0].contains("\"cheap\" is not a non-negative decimal"),
            "{words:?}"
        );
        assert_eq!(words[1], "output_cost_per_token is a boolean, not a number");
        assert!(reasons_for(&p, "negative")[0].contains("non-negative"));
        assert_eq!(
            reasons_for(&p, "nulls"),
            ["no per-token/image/character/second price"]
        );
    }

    #[test]
    fn litellm_image_prices_get_their_own_skus() {
        let json = r#"{"img": {"litellm_provider": "p", "input_cost_per_image": 0.001,
                               "output_cost_per_image": 0.04, "input_cost_per_token": 1e-06}}"#;
        let p = parse(Format::LiteLlm, json).unwrap();
        assert_eq!(find(&p, "img").unwrap().unit, "image");
        assert_eq!(find(&p, "img").unwrap().price_pico, 40_000_000_000);
        assert_eq!(
            find(&p, "img/input-image").unwrap().price_pico,
            1_000_000_000
        );
        assert_eq!(find(&p, "img/input").unwrap().unit, "token");
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let err = parse(
            Format::LiteLlm,
            "{\n  \"gpt-4o\": {\n    \"mode\": \"chat\"\n    \"litellm_provider\": \"openai\"\n  }\n}",
        )
        .unwrap_err();
        assert_eq!(
            err,
            ImportError::Json {
                line: 4,
                column: 5,
                message: "expected `,` or `}`".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid JSON at line 4, column 5: expected `,` or `}`"
        );

        let err = parse(Format::LiteLlm, "{\"a\": {\"b\": 1,}}").unwrap_err();
        assert!(
            matches!(
                err,
                ImportError::Json {
                    line: 1,
                    column: 15,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = parse(Format::LiteLlm, "").unwrap_err();
        assert!(matches!(err, ImportError::Json { line: 1, .. }), "{err:?}");

        let err = parse(Format::LiteLlm, "[1, 2]").unwrap_err();
        assert_eq!(err, ImportError::NotAnObject { found: "an array" });
    }

    #[test]
    fn toml_tables_accept_every_date_form() {
        let text = r#"
# Prices agreed with Luma.
[[pricing]]
provider = "luma"
sku = "v2"
unit = "credit"
price = "0.0045"

[[pricing]]
provider = "luma"
sku = "v3"
unit = "credit"
price = "0.005"
effective_from = "2026-01-01"

[[pricing]]
provider = "openai"
sku = "gpt-4o/input"
unit = "token"
price = 0.0000025
effective_from = "2026-01-01T02:00:00+02:00"

[[pricing]]
provider = "openai"
sku = "gpt-4o/output"
unit = "token"
price = 1e-5
effective_from = 2026-01-01

[[pricing]]
provider = "elevenlabs"
sku = "tts"
unit = "character"
price = 0
effective_from = 2026-01-01T00:00:00Z

[[pricing]]
provider = "twilio"
sku = "voice"
unit = "minute"
price = 1
effective_from = 2026-01-01T01:00-01:00
"#;
        let p = parse(Format::Toml, text).unwrap();
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let jan_1 = Some(1_767_225_600_000);
        let got: Vec<_> = p
            .rows
            .iter()
            .map(|r| (r.sku.as_str(), r.price_pico, r.effective_from))
            .collect();
        assert_eq!(
            got,
            [
                ("v2", 4_500_000_000, None),
                ("v3", 5_000_000_000, jan_1),
                ("gpt-4o/input", 2_500_000, jan_1),
                ("gpt-4o/output", 10_000_000, jan_1),
                ("tts", 0, jan_1),
                ("voice", 1_000_000_000_000, Some(1_767_232_800_000)),
            ]
        );
    }

    #[test]
    fn toml_entries_that_do_not_check_out_are_skipped() {
        let text = r#"
[server]
bind = "0.0.0.0:8080"

[[pricing]]
provider = "luma"
sku = "v2"
unit = "credit"
price = "0.0045"
currency = "usd"

[[pricing]]
provider = "luma"
sku = "v2"
unit = "credits"
price = "0.0045"

[[pricing]]
provider = "luma"
sku = "v2"
unit = "credit"

[[pricing]]
provider = "luma"
sku = "v2"
unit = "credit"
price = "0.0045"
effective_from = 2026-01-01T00:00:00

[[pricing]]
provider = 7
sku = "v2"
unit = "credit"
price = true

[[pricing]]
provider = "luma"
sku = "v2"
unit = "credit"
price = "0.0000000000001"

[[pricing]]
provider = "Luma"
sku = "V4"
unit = "Credit"
price = "1"
effective_from = "2026-02-30"
"#;
        let p = parse(Format::Toml, text).unwrap();
        assert!(p.rows.is_empty(), "{:?}", p.rows);
        let reasons: Vec<(&str, &str)> = p
            .skipped
            .iter()
            .map(|s| (s.entry.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons[0],
            ("top-level `server`", "not a [[pricing]] table; ignored")
        );
        assert_eq!(reasons[1].0, "pricing[0]");
        assert!(
            reasons[1].1.starts_with("unknown key `currency`"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].1.starts_with("unit \"credits\" is not one of"),
            "{reasons:?}"
        );
        assert_eq!(reasons[3], ("pricing[2]", "price is missing"));
        assert!(reasons[4].1.contains("has no UTC offset"), "{reasons:?}");
        assert_eq!(
            reasons[5].1,
            "price must be a decimal string such as \"0.0045\", not a boolean"
        );
        assert!(reasons[6].1.contains("precision"), "{reasons:?}");
        assert!(
            reasons[7].1.starts_with("effective_from \"2026-02-30\""),
            "{reasons:?}"
        );
        assert_eq!(reasons.len(), 8);
    }

    #[test]
    fn toml_whole_file_errors() {
        let err = parse(
            Format::Toml,
            "[[pricing]]\nprovider = \"luma\nsku = \"v2\"\n",
        )
        .unwrap_err();
        let ImportError::Toml(message) = &err else {
            panic!("{err:?}");
        };
        assert!(message.contains("line 2"), "{message}");

        let err = parse(Format::Toml, "[server]\nbind = \"x\"\n").unwrap_err();
        assert_eq!(err.to_string(), "the file has no [[pricing]] tables");

        let err = parse(Format::Toml, "pricing = 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`pricing` must be an array of [[pricing]] tables, not an integer"
        );

        let p = parse(Format::Toml, "pricing = []\n").unwrap();
        assert_eq!(p, Parsed::default());
    }

    #[test]
    fn csv_columns_come_in_any_order_with_quoting() {
        let text = "\u{feff}# exported from the finance sheet\r\n\
                    Price , SKU,\"unit\",provider,Effective_From\r\n\
                    \r\n\
                    \"0.0045\",v2,credit,luma,\r\n\
                    # a comment between rows\r\n\
                    \"1.5e-7\" , \" gpt-4o/input \" ,token,OpenAI,2026-01-01T00:00:00Z\r\n\
                    0.01,\"a,\"\"b\"\"\",call,acme,2026-01-01\r\n";
        let p = parse(Format::Csv, text).unwrap();
        assert_eq!(
            p.rows,
            [
                row("luma", "v2", "credit", 4_500_000_000),
                PriceRow {
                    effective_from: Some(1_767_225_600_000),
                    ..row("openai", "gpt-4o/input", "token", 150_000)
                },
            ]
        );
        // The comma and the doubled quotes came through intact, and check_sku refused them.
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert_eq!(p.skipped[0].entry, "line 7");
        assert!(
            p.skipped[0].reason.starts_with(r#"sku "a,\"b\"" must be"#),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn csv_bad_rows_name_their_line() {
        let text = "provider,sku,unit,price,effective_from\n\
                    luma,v2,credit,0.0045,\n\
                    luma,v2,credit\n\
                    luma,v3,credits,0.0045,\n\
                    luma,v4,credit,abc,\n\
                    luma,v5,credit,0.0045,tomorrow\n\
                    luma,\"v6,credit,0.0045,\n\
                    luma,v\"7,credit,0.0045,\n\
                    luma,\"v8\"x,credit,0.0045,\n\
                    luma,v9,credit,0.0045,,\n";
        let p = parse(Format::Csv, text).unwrap();
        assert_eq!(p.rows, [row("luma", "v2", "credit", 4_500_000_000)]);
        let lines: Vec<&str> = p.skipped.iter().map(|s| s.entry.as_str()).collect();
        assert_eq!(
            lines,
            [
                "line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "line 9", "line 10"
            ]
        );
        let reason = |i: usize| p.skipped[i].reason.as_str();
        assert_eq!(reason(0), "has 3 fields; the header has 5");
        assert!(reason(1).contains("\"credits\""));
        assert!(reason(2).starts_with("price \"abc\""));
        assert!(reason(3).starts_with("effective_from \"tomorrow\""));
        assert_eq!(reason(4), "a quoted field is not closed on this line");
        assert!(reason(5).starts_with("a quote inside an unquoted field"));
        assert!(reason(6).starts_with("'x' after a closing quote"));
        assert_eq!(reason(7), "has 6 fields; the header has 5");
    }

    #[test]
    fn csv_header_problems_are_whole_file_errors() {
        let err = parse(Format::Csv, "provider,sku,price\nluma,v2,0.0045\n").unwrap_err();
        assert_eq!(err, ImportError::CsvMissingColumn("unit"));
        assert!(err.to_string().contains("no `unit` column"), "{err}");

        let err = parse(Format::Csv, "# only a comment\n\n").unwrap_err();
        assert_eq!(err, ImportError::CsvNoHeader);

        let err = parse(Format::Csv, "\nprovider,sku,unit,price,effective_date\n").unwrap_err();
        assert_eq!(
            err,
            ImportError::CsvHeader {
                line: 2,
                message: "unknown column `effective_date`; the columns are provider, sku, unit, \
                          price and optionally effective_from"
                    .into()
            }
        );

        let err = parse(Format::Csv, "provider,sku,unit,price,SKU\n").unwrap_err();
        assert!(err.to_string().contains("`sku` appears twice"), "{err}");

        let err = parse(Format::Csv, "provider,,sku,unit,price\n").unwrap_err();
        assert!(err.to_string().contains("column 2 has no name"), "{err}");

        let p = parse(Format::Csv, "provider,sku,unit,price\n").unwrap();
        assert_eq!(p, Parsed::default());
    }

    #[test]
    fn duplicates_are_imported_once_and_conflicts_not_at_all() {
        let text = "provider,sku,unit,price,effective_from\n\
                    luma,v2,credit,0.0045,\n\
                    LUMA,V2,credit,0.0045,\n\
                    luma,v3,credit,0.005,2026-01-01\n\
                    luma,v3,credit,0.006,2026-01-01\n\
                    luma,v3,credit,0.006,2026-02-01\n\
                    luma,v4,credit,1,\n\
                    luma,v4,request,1,\n";
        let p = parse(Format::Csv, text).unwrap();
        let got: Vec<_> = p
            .rows
            .iter()
            .map(|r| (r.sku.as_str(), r.price_pico))
            .collect();
        assert_eq!(got, [("v2", 4_500_000_000), ("v3", 6_000_000_000)]);
        let skipped: Vec<_> = p
            .skipped
            .iter()
            .map(|s| (s.entry.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "line 3",
                    "luma v2 has the same price in line 2; imported once"
                ),
                (
                    "line 4",
                    "luma v3 has a different unit or price in line 5; none of them is imported"
                ),
                (
                    "line 5",
                    "luma v3 has a different unit or price in line 4; none of them is imported"
                ),
                (
                    "line 7",
                    "luma v4 has a different unit or price in line 8; none of them is imported"
                ),
                (
                    "line 8",
                    "luma v4 has a different unit or price in line 7; none of them is imported"
                ),
            ]
        );
    }

    #[test]
    fn csv_lines_split_like_rfc_4180_within_a_line() {
        let split = |s: &str| split_csv_line(s);
        assert_eq!(split("a,b,c"), Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(
            split(" a , b ,"),
            Ok(vec!["a".into(), "b".into(), "".into()])
        );
        assert_eq!(split(""), Ok(vec!["".into()]));
        assert_eq!(
            split(r#""a,b","say ""hi""", "" "#),
            Ok(vec!["a,b".into(), "say \"hi\"".into(), "".into()])
        );
        assert_eq!(split(r#"" padded ""#), Ok(vec![" padded ".into()]));
        assert!(split(r#""open"#).is_err());
        assert!(split(r#"a"b"#).is_err());
        assert!(split(r#""a"b"#).is_err());
    }

    #[test]
    fn formats_are_detected_by_extension_then_content() {
        assert_eq!(detect("prices.json", ""), Format::LiteLlm);
        assert_eq!(detect("/tmp/Prices.TOML", "{"), Format::Toml);
        assert_eq!(detect("a.b/prices.csv", "{"), Format::Csv);
        assert_eq!(detect("-", "\u{feff}  \n{\"gpt-4o\": {}}"), Format::LiteLlm);
        assert_eq!(
            detect("prices.txt", "# ours\n[[pricing]]\nprovider = \"x\"\n"),
            Format::Toml
        );
        assert_eq!(detect("prices", "[[ pricing ]] # spaced\n"), Format::Toml);
        assert_eq!(detect("prices", "provider,sku,unit,price\n"), Format::Csv);
        assert_eq!(detect("prices", "[[pricing_old]]\n"), Format::Csv);
    }

    #[test]
    fn effective_from_reads_dates_and_rfc_3339_times() {
        assert_eq!(parse_effective_from("2026-01-01"), Ok(1_767_225_600_000));
        assert_eq!(parse_effective_from(" 2026-01-01 "), Ok(1_767_225_600_000));
        assert_eq!(
            parse_effective_from("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600_000)
        );
        assert_eq!(
            parse_effective_from("2026-01-01T09:30:00+02:00"),
            Ok(1_767_252_600_000)
        );
        assert_eq!(
            parse_effective_from("2026-01-01T00:00:00.0019Z"),
            Ok(1_767_225_600_001)
        );
        assert_eq!(parse_effective_from("1969-12-31T23:59:59.9995Z"), Ok(-1));
        for bad in [
            "2026-1-1",
            "2026-01-01T00:00:00",
            "2026-02-30",
            "yesterday",
            "",
        ] {
            let err = parse_effective_from(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }
}

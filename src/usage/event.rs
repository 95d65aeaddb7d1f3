//! CloudEvents 1.0 (JSON format) parsing and per-type validation for `POST /api/v1/events`.
//!
//! Each event of a batch is judged on its own: a valid event becomes a [`NewEvent`], an invalid
//! one a precise message naming the field. Nothing here touches the store.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest `id`, `source` and `type` accepted (bytes).
const MAX_ATTR: usize = 512;
/// Longest `subject` (the customer id).
pub const MAX_SUBJECT: usize = 256;
/// Deepest nesting of `data` accepted; real payloads are shallow.
pub const MAX_DATA_DEPTH: usize = 16;
/// Largest quantity, duration or status-like number accepted in `data`.
const MAX_NUMBER: f64 = 1e12;

/// Units a `provider.usage` quantity may be measured in.
pub const UNITS: &[&str] = &[
    "credit",
    "image",
    "character",
    "second",
    "token",
    "request",
    "call",
    "minute",
];

/// A validated event, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub source: String,
    pub id: String,
    pub kind: String,
    pub subject: Option<String>,
    /// Event time, UTC milliseconds.
    pub time_ms: i64,
    /// `data` as compact JSON (`{}` when absent).
    pub data: String,
    /// What the rollups need from `data`, extracted once during validation.
    pub facts: Facts,
}

/// Typed figures of the known metered types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// `provider.usage`: provider and sku ids, unit (one of [`UNITS`]) and the quantity.
    pub provider: Option<String>,
    pub sku: Option<String>,
    pub unit: &'static str,
    pub quantity: f64,
    /// `provider.usage`: cost at the price in force at the event's time, in nano-USD; set at
    /// ingest by the pricing step, `None` while unpriced.
    pub cost_nano: Option<i64>,
    /// `api.request`: HTTP status, duration, and the endpoint's category (set at ingest from
    /// `usage.endpoint_categories`).
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub endpoint: Option<String>,
    pub category: Option<std::sync::Arc<str>>,
}

/// Receipt-time facts validation needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub now_ms: i64,
    /// Events further than this in the future are rejected.
    pub max_future_skew_ms: i64,
}

/// Validates one event of a request body, as its JSON text. Equal to [`validate`] of the
/// decoded value, message for message.
///
/// A well-formed event is read straight into a borrowed envelope, with only `data` decoded
/// into a map: decoding whole events into `Value`s and dropping them again was a fifth of the
/// server's CPU under ingest. Anything the envelope does not take as it is (a wrong type, a
/// repeated attribute, any rule broken) is judged again by [`validate`], which names the
/// problem; so only events that are refused anyway are read twice.
///
/// The outer `Err` is for text that delimits as JSON but does not decode (a number no `f64`
/// holds, nesting past serde_json's limit): the request is then refused whole, as a body that
/// does not decode always was.
pub fn validate_json(
    event: &RawValue,
    rules: Rules,
) -> Result<Result<NewEvent, String>, serde_json::Error> {
    if let Some(e) = well_formed(event.get(), rules) {
        return Ok(Ok(e));
    }
    let value: Value = serde_json::from_str(event.get())?;
    Ok(validate(&value, rules))
}

/// The envelope of an event that needs no second look: every attribute of its expected type.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    datacontenttype: Option<Cow<'a, str>>,
    /// Present at all (even `null`): refused, by [`validate`].
    #[serde(default, deserialize_with = "present")]
    data_base64: bool,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// [`validate`]'s result for an event that passes every rule, read through [`Envelope`];
/// `None` for any other (then [`validate`] says why).
fn well_formed(text: &str, rules: Rules) -> Option<NewEvent> {
    let env: Envelope = serde_json::from_str(text).ok()?;
    if env.specversion != "1.0"
        || env.data_base64
        || [&env.id, &env.source, &env.kind]
            .iter()
            .any(|attr| attr_problem("", attr).is_some())
    {
        return None;
    }
    if env
        .datacontenttype
        .as_deref()
        .is_some_and(|ct| !json_media(ct))
    {
        return None;
    }
    if env
        .subject
        .as_deref()
        .is_some_and(|s| subject_problem(s).is_some())
    {
        return None;
    }
    let time_ms = match env.time.as_deref() {
        None => rules.now_ms,
        Some(t) => parse_time(t, rules).ok()?,
    };
    let data = match env.data {
        None => Data::empty(),
        Some(raw) => Data::read(raw.get())?,
    };
    let facts = check_known_type(&env.kind, &data).ok()?;
    if matches!(&*env.kind, "api.request" | "provider.usage") && env.subject.is_none() {
        return None;
    }
    Some(NewEvent {
        source: env.source.into_owned(),
        id: env.id.into_owned(),
        kind: env.kind.into_owned(),
        subject: env.subject.map(Cow::into_owned),
        time_ms,
        data: data.text,
        facts,
    })
}

/// Validates one decoded JSON value as a CloudEvent.
pub fn validate(value: &Value, rules: Rules) -> Result<NewEvent, String> {
    let obj = value.as_object().ok_or("event must be a JSON object")?;
    match obj.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(other) => return Err(format!("specversion must be \"1.0\", got {}", short(other))),
        None => return Err("specversion is required (\"1.0\")".into()),
    }
    let id = required_str(obj, "id")?;
    let source = required_str(obj, "source")?;
    let kind = required_str(obj, "type")?;
    if let Some(ct) = obj.get("datacontenttype") {
        match ct.as_str() {
            Some(ct) if json_media(ct) => {}
            _ => return Err("datacontenttype must be a JSON media type".into()),
        }
    }
    if obj.contains_key("data_base64") {
        return Err("data_base64 is not accepted; send data as a JSON object".into());
    }

    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match subject_problem(s) {
            Some(problem) => return Err(problem),
            None => Some(s.clone()),
        },
        Some(_) => return Err("subject must be a string".into()),
    };

    let time_ms = match obj.get("time") {
        None | Some(Value::Null) => rules.now_ms,
        Some(Value::String(t)) => parse_time(t, rules)?,
        Some(_) => return Err("time must be an RFC 3339 string".into()),
    };

    let empty = Map::new();
    let data = match obj.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err("data must be a JSON object".into()),
    };
    check_data(data)?;
    let facts = check_known_type(&kind, data)?;
    if matches!(kind.as_str(), "api.request" | "provider.usage") && subject.is_none() {
        return Err(format!(
            "subject (the customer id) is required for {kind} events"
        ));
    }

    Ok(NewEvent {
        source,
        id,
        kind,
        subject,
        time_ms,
        data: serde_json::to_string(data).unwrap_or_else(|_| "{}".into()),
        facts,
    })
}

fn required_str(obj: &Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.get(field) {
        Some(Value::String(s)) => match attr_problem(field, s) {
            Some(problem) => Err(problem),
            None => Ok(s.clone()),
        },
        Some(_) => Err(format!("{field} must be a string")),
        None => Err(format!("{field} is required")),
    }
}

/// What is wrong with the value of a required string attribute, if anything.
fn attr_problem(field: &str, s: &str) -> Option<String> {
    if s.is_empty() {
        Some(format!("{field} must not be empty"))
    } else if s.len() > MAX_ATTR {
        Some(format!(
            "{field} is {} bytes; the limit is {MAX_ATTR}",
            s.len()
        ))
    } else if s.chars().any(char::is_control) {
        // Control characters (NUL above all, which PostgreSQL text cannot hold) are refused
        // here so that no event can fail the commit it shares with other requests.
        Some(format!("{field} contains control characters"))
    } else {
        None
    }
}

/// What is wrong with a `subject` string, if anything.
fn subject_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        Some("subject must not be empty".into())
    } else if s.len() > MAX_SUBJECT {
        Some(format!(
            "subject is {} bytes; the limit is {MAX_SUBJECT}",
            s.len()
        ))
    } else if s.chars().any(char::is_control) {
        Some("subject contains control characters".into())
    } else {
        None
    }
}

fn json_media(ct: &str) -> bool {
    ct.starts_with("application/json") || ct.ends_with("+json")
}

/// An RFC 3339 `time` in UTC milliseconds, if not too far in the future.
fn parse_time(t: &str, rules: Rules) -> Result<i64, String> {
    let parsed = OffsetDateTime::parse(t, &Rfc3339)
        .map_err(|_| format!("time {:?} is not an RFC 3339 timestamp", truncate(t, 64)))?;
    let ms = (parsed.unix_timestamp_nanos() / 1_000_000) as i64;
    if ms > rules.now_ms + rules.max_future_skew_ms {
        return Err(format!(
            "time {t} is more than {} s in the future",
            rules.max_future_skew_ms / 1000
        ));
    }
    Ok(ms)
}

/// Walks `data` once: at most [`MAX_DATA_DEPTH`] nested objects/arrays, and every number finite
/// and of sane magnitude. The path of a bad number is built only when there is one, so valid
/// events (the hot path) allocate nothing here.
fn check_data(data: &Map<String, Value>) -> Result<(), String> {
    enum Problem {
        TooDeep,
        /// Path below `data` of the offending number, built while unwinding.
        BadNumber(String),
    }
    fn under(segment: impl FnOnce() -> String) -> impl FnOnce(Problem) -> Problem {
        move |p| match p {
            Problem::BadNumber(rest) => Problem::BadNumber(segment() + &rest),
            deep => deep,
        }
    }
    /// The members of an object that is itself inside `depth` objects/arrays (counting itself).
    fn members(m: &Map<String, Value>, depth: usize) -> Result<(), Problem> {
        m.iter()
            .try_for_each(|(k, x)| walk(x, depth).map_err(under(|| format!(".{k}"))))
    }
    fn walk(v: &Value, depth: usize) -> Result<(), Problem> {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() <= MAX_NUMBER => Ok(()),
                _ => Err(Problem::BadNumber(String::new())),
            },
            Value::Object(_) | Value::Array(_) if depth + 1 > MAX_DATA_DEPTH => {
                Err(Problem::TooDeep)
            }
            Value::Object(m) => members(m, depth + 1),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| walk(x, depth + 1).map_err(under(|| format!("[{i}]")))),
            _ => Ok(()),
        }
    }
    members(data, 1).map_err(|p| match p {
        Problem::TooDeep => format!("data is nested deeper than {MAX_DATA_DEPTH} levels"),
        Problem::BadNumber(path) => format!("data{path} is out of range (|x| ≤ 1e12)"),
    })
}

/// A top-level member of `data`, as far as the type rules look into it.
enum Field<'v> {
    Null,
    Str(&'v str),
    Num(f64),
    /// A boolean, array or object.
    Other,
}

/// A member of `data` as [`Compact`] read it: a [`Field`] that owns a string it had to unescape.
enum Seen<'de> {
    Null,
    Str(Cow<'de, str>),
    Num(f64),
    Other,
}

impl Seen<'_> {
    fn field(&self) -> Field<'_> {
        match self {
            Seen::Null => Field::Null,
            Seen::Str(s) => Field::Str(s),
            Seen::Num(f) => Field::Num(*f),
            Seen::Other => Field::Other,
        }
    }
}

/// `data` as the type rules read it: a decoded map (the value path) or [`Data`] (the text path).
trait Members {
    fn field(&self, name: &str) -> Option<Field<'_>>;
    /// A member decoded whole, for the one rule that looks inside an object (`conversion.value`).
    fn value(&self, name: &str) -> Option<Cow<'_, Value>>;
}

impl Members for Map<String, Value> {
    fn field(&self, name: &str) -> Option<Field<'_>> {
        Some(match self.get(name)? {
            Value::Null => Field::Null,
            Value::String(s) => Field::Str(s),
            Value::Number(n) => Field::Num(n.as_f64().unwrap_or(f64::NAN)),
            _ => Field::Other,
        })
    }

    fn value(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.get(name).map(Cow::Borrowed)
    }
}

/// `data` read once from its text, the way [`well_formed`] takes it: written out compact in
/// the sender's member order while its depth and numbers are checked, its top-level members
/// noted for the type rules. Decoding it into a map, walking the map and encoding it again was
/// a third of validation's cost. `None` for anything [`check_data`] would refuse, and for what
/// the map would have changed (a repeated key, where the map keeps the last) or would judge
/// faster (an object of more than [`Data::MAX_KEYS`] members, whose repeats are not looked
/// for here): [`validate`] then decides.
struct Data<'de> {
    text: String,
    /// Each top-level member: its name, what it held, and where its value is in `text`.
    members: Vec<(Cow<'de, str>, Seen<'de>, std::ops::Range<usize>)>,
}

impl<'de> Data<'de> {
    /// Most members an object may have for the repeats among them to be looked for one by one.
    const MAX_KEYS: usize = 64;

    fn empty() -> Self {
        Data {
            text: "{}".into(),
            members: Vec::new(),
        }
    }

    fn read(text: &'de str) -> Option<Self> {
        let mut out = Vec::with_capacity(text.len());
        let mut de = serde_json::Deserializer::from_str(text);
        let members = serde::Deserializer::deserialize_map(&mut de, Top { out: &mut out }).ok()?;
        de.end().ok()?;
        Some(Data {
            text: String::from_utf8(out).ok()?,
            members,
        })
    }
}

impl Members for Data<'_> {
    fn field(&self, name: &str) -> Option<Field<'_>> {
        self.members
            .iter()
            .find(|(key, _, _)| key == name)
            .map(|(_, seen, _)| seen.field())
    }

    fn value(&self, name: &str) -> Option<Cow<'_, Value>> {
        let (_, _, at) = self.members.iter().find(|(key, _, _)| key == name)?;
        serde_json::from_str(self.text.get(at.clone())?)
            .ok()
            .map(Cow::Owned)
    }
}

/// Reads the `data` object itself, noting its members.
struct Top<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Vec<(Cow<'de, str>, Seen<'de>, std::ops::Range<usize>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Self::Value = Vec::new();
        self.out.push(b'{');
        while let Some(key) = map.next_key_seed(Key)? {
            if members.len() == Data::MAX_KEYS || members.iter().any(|(k, _, _)| *k == key) {
                return Err(de::Error::custom("left to the value path"));
            }
            if !members.is_empty() {
                self.out.push(b',');
            }
            write_str(self.out, &key);
            self.out.push(b':');
            let start = self.out.len();
            let field = map.next_value_seed(Compact {
                out: self.out,
                depth: 1,
            })?;
            members.push((key, field, start..self.out.len()));
        }
        self.out.push(b'}');
        Ok(members)
    }
}

/// Writes one JSON value compactly as it is read, refusing what [`check_data`] refuses.
/// `depth` is the nesting of the object or array the value sits in (`data` itself is 1).
struct Compact<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = Seen<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Compact<'_> {
    fn number<T: serde::Serialize, E: de::Error>(self, n: T, f: f64) -> Result<Seen<'static>, E> {
        if !(f.is_finite() && f.abs() <= MAX_NUMBER) {
            return Err(E::custom("number out of range"));
        }
        serde_json::to_writer(&mut *self.out, &n).map_err(E::custom)?;
        Ok(Seen::Num(f))
    }

    fn nested<E: de::Error>(&mut self) -> Result<usize, E> {
        if self.depth + 1 > MAX_DATA_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Seen<'de>, E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(Seen::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seen<'de>, E> {
        self.number(v, v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seen<'de>, E> {
        self.number(v, v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seen<'de>, E> {
        self.number(v, v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Seen<'de>, E> {
        write_str(self.out, v);
        Ok(Seen::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Seen<'de>, E> {
        // An escaped string is decoded into a buffer that does not outlive this call: kept only
        // where the type rules may ask for it, as a member of `data` itself.
        write_str(self.out, v);
        Ok(if self.depth == 1 {
            Seen::Str(Cow::Owned(v.to_owned()))
        } else {
            Seen::Other
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Seen<'de>, E> {
        self.out.extend_from_slice(b"null");
        Ok(Seen::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        let depth = self.nested()?;
        self.out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                self.out.push(b',');
            }
            let element = Compact {
                out: &mut *self.out,
                depth,
            };
            if seq.next_element_seed(element)?.is_none() {
                if !first {
                    self.out.pop();
                }
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(Seen::Other)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Seen<'de>, A::Error> {
        let depth = self.nested()?;
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        self.out.push(b'{');
        while let Some(key) = map.next_key_seed(Key)? {
            if keys.len() == Data::MAX_KEYS || keys.contains(&key) {
                return Err(de::Error::custom("left to the value path"));
            }
            if !keys.is_empty() {
                self.out.push(b',');
            }
            write_str(self.out, &key);
            self.out.push(b':');
            map.next_value_seed(Compact {
                out: &mut *self.out,
                depth,
            })?;
            keys.push(key);
        }
        self.out.push(b'}');
        Ok(Seen::Other)
    }
}

/// A member name, borrowed from the text unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// A string as serde_json writes it, so that both paths store the same text.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

fn str_field<'a>(
    data: &'a impl Members,
    field: &str,
    required: bool,
) -> Result<Option<&'a str>, String> {
    match data.field(field) {
        Some(Field::Str(s)) if !s.is_empty() && s.len() <= MAX_ATTR => Ok(Some(s)),
        Some(Field::Str(_)) => Err(format!("data.{field} must be 1–{MAX_ATTR} bytes")),
        None | Some(Field::Null) if !required => Ok(None),
        None | Some(Field::Null) => Err(format!("data.{field} is required")),
        Some(_) => Err(format!("data.{field} must be a string")),
    }
}

fn num_field(data: &impl Members, field: &str, required: bool) -> Result<Option<f64>, String> {
    match data.field(field) {
        Some(Field::Num(f)) => {
            if f < 0.0 {
                return Err(format!("data.{field} must not be negative"));
            }
            Ok(Some(f))
        }
        None | Some(Field::Null) if !required => Ok(None),
        None | Some(Field::Null) => Err(format!("data.{field} is required")),
        Some(_) => Err(format!("data.{field} must be a number")),
    }
}

/// Field rules for the types opsdeck understands; any other type is stored as it is.
fn check_known_type(kind: &str, data: &impl Members) -> Result<Facts, String> {
    let mut facts = Facts::default();
    match kind {
        "api.request" => {
            let endpoint = str_field(data, "endpoint", true)?.unwrap_or_default();
            if !endpoint.starts_with('/') {
                return Err("data.endpoint must be a path starting with /".into());
            }
            facts.endpoint = Some(endpoint.to_string());
            str_field(data, "method", true)?;
            let status = num_field(data, "status", true)?.unwrap_or_default();
            if status.fract() != 0.0 || !(100.0..=599.0).contains(&status) {
                return Err("data.status must be an HTTP status code (100–599)".into());
            }
            facts.status = Some(status as u16);
            facts.duration_ms = num_field(data, "duration_ms", true)?.unwrap_or_default();
        }
        "provider.usage" => {
            let provider = str_field(data, "provider", true)?.unwrap_or_default();
            crate::costs::check_provider(provider).map_err(|e| format!("data.{e}"))?;
            let sku = str_field(data, "sku", true)?.unwrap_or_default();
            crate::costs::check_sku(sku).map_err(|e| format!("data.{e}"))?;
            let unit = str_field(data, "unit", true)?.unwrap_or_default();
            facts.unit = UNITS
                .iter()
                .find(|u| **u == unit)
                .ok_or_else(|| format!("data.unit {unit:?} is not one of {}", UNITS.join(", ")))?;
            facts.quantity = num_field(data, "quantity", true)?.unwrap_or_default();
            str_field(data, "job_id", false)?;
            facts.provider = str_field(data, "provider", true)?.map(str::to_string);
            facts.sku = str_field(data, "sku", true)?.map(str::to_string);
        }
        "page.view" => {
            str_field(data, "path", true)?;
            str_field(data, "user", false)?;
        }
        "feature.used" => {
            str_field(data, "feature", true)?;
            str_field(data, "user", false)?;
        }
        "conversion" => {
            str_field(data, "name", true)?;
            str_field(data, "campaign", false)?;
            if let Some(v) = data.value("value").filter(|v| !v.is_null()) {
                let amount = v.get("amount").and_then(Value::as_i64);
                let currency = v.get("currency").and_then(Value::as_str);
                match (amount, currency) {
                    (Some(a), Some(c)) if a >= 0 && crate::money::Money::new(a, c).is_ok() => {}
                    _ => {
                        return Err("data.value must be money: {\"amount\": minor units ≥ 0, \"currency\": \"usd\"}".into());
                    }
                }
            }
        }
        "session.start" => {
            str_field(data, "user", true)?;
        }
        _ => {}
    }
    Ok(facts)
}

fn short(v: &Value) -> String {
    truncate(&v.to_string(), 32)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_795_500_000_000;
    const RULES: Rules = Rules {
        now_ms: NOW,
        max_future_skew_ms: 300_000,
    };

    fn base(kind: &str, data: Value) -> Value {
        json!({"specversion": "1.0", "id": "e1", "source": "app", "type": kind, "subject": "cus_1", "data": data})
    }

    #[test]
    fn known_types_validate_their_fields() {
        let ok = [
            base(
                "api.request",
                json!({"endpoint": "/api/x", "method": "GET", "status": 200, "duration_ms": 12.5}),
            ),
            base(
                "provider.usage",
                json!({"provider": "luma", "sku": "v2", "unit": "credit", "quantity": 40}),
            ),
            base("page.view", json!({"path": "/pricing"})),
            base("feature.used", json!({"feature": "export", "user": "u1"})),
            base(
                "conversion",
                json!({"name": "signup", "value": {"amount": 800, "currency": "usd"}}),
            ),
            base("session.start", json!({"user": "u1"})),
            base("custom.thing", json!({"anything": [1, 2, {"x": true}]})),
        ];
        for e in ok {
            validate(&e, RULES).unwrap_or_else(|err| panic!("{e}: {err}"));
        }
        let bad = [
            (
                base(
                    "api.request",
                    json!({"endpoint": "x", "method": "GET", "status": 200, "duration_ms": 1}),
                ),
                "data.endpoint",
            ),
            (
                base(
                    "api.request",
                    json!({"endpoint": "/x", "method": "GET", "status": 999, "duration_ms": 1}),
                ),
                "data.status",
            ),
            (
                base(
                    "provider.usage",
                    json!({"provider": "Luma", "sku": "v2", "unit": "credit", "quantity": 1}),
                ),
                "data.provider",
            ),
            (
                base(
                    "provider.usage",
                    json!({"provider": "luma", "sku": "v2", "unit": "bucket", "quantity": 1}),
                ),
                "data.unit",
            ),
            (
                base(
                    "provider.usage",
                    json!({"provider": "luma", "sku": "v2", "unit": "credit", "quantity": -1}),
                ),
                "negative",
            ),
            (
                base(
                    "provider.usage",
                    json!({"provider": "luma", "sku": "v2", "unit": "credit", "quantity": 1e300}),
                ),
                "out of range",
            ),
            (
                base("conversion", json!({"name": "x", "value": 8.5})),
                "data.value",
            ),
            (base("session.start", json!({})), "data.user"),
        ];
        for (e, needle) in bad {
            let err = validate(&e, RULES).unwrap_err();
            assert!(err.contains(needle), "{e}: {err}");
        }
    }

    #[test]
    fn envelope_rules() {
        let mut e = base("page.view", json!({"path": "/"}));
        e["specversion"] = json!("0.3");
        assert!(validate(&e, RULES).unwrap_err().contains("specversion"));
        for field in ["id", "source", "type"] {
            let mut e = base("page.view", json!({"path": "/"}));
            e.as_object_mut().unwrap().remove(field);
            assert_eq!(
                validate(&e, RULES).unwrap_err(),
                format!("{field} is required")
            );
        }
        let mut e = base(
            "api.request",
            json!({"endpoint": "/x", "method": "GET", "status": 200, "duration_ms": 1}),
        );
        e.as_object_mut().unwrap().remove("subject");
        assert!(validate(&e, RULES).unwrap_err().contains("subject"));
        e["subject"] = json!("x".repeat(257));
        assert!(validate(&e, RULES).unwrap_err().contains("256"));
        let mut e = base("page.view", json!({"path": "/"}));
        e["id"] = json!("a\u{0}b");
        assert!(
            validate(&e, RULES)
                .unwrap_err()
                .contains("control characters")
        );
        let mut e = base("page.view", json!({"path": "/"}));
        e["time"] = json!("yesterday");
        assert!(validate(&e, RULES).unwrap_err().contains("RFC 3339"));
        e["time"] = json!("2099-01-01T00:00:00Z");
        assert!(validate(&e, RULES).unwrap_err().contains("future"));
        e["time"] = json!("2026-11-23T10:00:00.250+01:00");
        assert_eq!(validate(&e, RULES).unwrap().time_ms, 1_795_424_400_250);
        e.as_object_mut().unwrap().remove("time");
        assert_eq!(
            validate(&e, RULES).unwrap().time_ms,
            NOW,
            "time defaults to receipt"
        );
        e["data"] = json!([1]);
        assert!(
            validate(&e, RULES)
                .unwrap_err()
                .contains("data must be a JSON object")
        );
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({"a": deep});
        }
        e["data"] = deep;
        assert!(validate(&e, RULES).unwrap_err().contains("nested deeper"));
    }

    /// An event with its `data` decoded, for comparing events whose `data` members may be
    /// written in another order (the text path keeps the sender's, the value path sorts them).
    fn same_data(e: NewEvent) -> (NewEvent, Value) {
        let data = serde_json::from_str(&e.data).unwrap();
        (
            NewEvent {
                data: String::new(),
                ..e
            },
            data,
        )
    }

    /// Every event judged from its text gets exactly what its decoded value gets, and the
    /// well-formed ones take the envelope path (not the second reading).
    #[test]
    fn text_path_agrees_with_value_path() {
        let texts = [
            // Well-formed: escapes, extensions, null subject and data, whitespace, unicode.
            (
                r#"{"specversion":"1.0","id":"a\"b","source":"app","type":"page.view","data":{"path":"/x","user":"u\u00e9"}}"#,
                true,
            ),
            (
                r#" { "specversion" : "1.0" , "id" : "e1" , "source" : "app" , "type" : "x.y" , "subject" : null , "data" : null , "ext" : [1, {"z": 2}] } "#,
                true,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"api.request","subject":"cus_\u0031","time":"2026-11-23T10:00:00.250+01:00","datacontenttype":"application/json","data":{"endpoint":"/a","method":"GET","status":200,"duration_ms":3,"b":2,"a":1}}"#,
                true,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"custom","data":{"n":[1,2.5,{"x":true}]}}"#,
                true,
            ),
            // Valid, but a repeated attribute (the last one counts) is left to the value path.
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","data":{"path":"/"},"id":"e2"}"#,
                false,
            ),
            // Refused, each for one reason the value path names.
            (
                r#"{"specversion":1.0,"id":"e1","source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"0.3","id":"e1","source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":7,"source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"","source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"a\u0000b","source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","source":"app","type":"page.view"}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","data_base64":null}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","datacontenttype":"text/plain","data":{"path":"/"}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","subject":"","data":{"path":"/"}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","subject":5,"data":{"path":"/"}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","time":"yesterday","data":{"path":"/"}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","time":"2099-01-01T00:00:00Z","data":{"path":"/"}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","data":[1]}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"page.view","data":{"path":1}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"api.request","data":{"endpoint":"/a","method":"GET","status":200,"duration_ms":3}}"#,
                false,
            ),
            (
                r#"{"specversion":"1.0","id":"e1","source":"app","type":"custom","data":{"n":1e300}}"#,
                false,
            ),
            (r#"[1]"#, false),
            (r#""text""#, false),
        ];
        for (text, well_formed_expected) in texts {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                validate_json(raw, RULES).unwrap().map(same_data),
                validate(&value, RULES).map(same_data),
                "{text}"
            );
            let fast = well_formed(raw.get(), RULES).is_some();
            assert_eq!(fast, well_formed_expected, "{text}");
        }
        // A number no f64 holds passes a batch's first reading (which only delimits events),
        // and is then found.
        let raw: &RawValue = serde_json::from_str(
            r#"{"specversion":"1.0","id":"e1","source":"app","type":"custom","data":{"n":1e400}}"#,
        )
        .unwrap();
        let err = validate_json(raw, RULES).unwrap_err();
        assert!(err.to_string().contains("number out of range"), "{err}");
    }

    fn data_of(data: &str) -> Option<String> {
        Data::read(data).map(|d| d.text)
    }

    /// `data` is stored compact in the sender's member order, strings and numbers written as
    /// serde_json writes them, with nothing of its meaning changed.
    #[test]
    fn data_is_written_compact_as_sent() {
        let text = r#" { "b" : [ 1 , 2.50 , -3 , 1e3 , true , null , { } , [ ] ] ,
            "a\u0041" : "tab\there \u00e9 \"q\" \\ \u001f" , "z" : { "y" : { "x" : 0 } } } "#;
        let written = data_of(text).expect("well-formed data is read on the text path");
        assert_eq!(
            written,
            r#"{"b":[1,2.5,-3,1000.0,true,null,{},[]],"aA":"tab\there é \"q\" \\ \u001f","z":{"y":{"x":0}}}"#
        );
        let reread: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(reread, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(data_of("{}").as_deref(), Some("{}"));
    }

    /// What the value path would judge differently is left to it: a repeated member (the map
    /// keeps the last), an object too wide to look for repeats in one by one, and everything
    /// `check_data` refuses, at the same depth and number bounds.
    #[test]
    fn data_the_text_path_leaves_to_the_value_path() {
        assert!(data_of(r#"{"a":1,"a":2}"#).is_none());
        assert!(data_of(r#"{"o":{"k":1,"k":1}}"#).is_none());
        assert!(data_of(r#"{"o":[{"k":1},{"k":1}]}"#).is_some());
        let wide = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            format!("{{{}}}", members.join(","))
        };
        assert!(data_of(&wide(Data::MAX_KEYS)).is_some());
        assert!(data_of(&wide(Data::MAX_KEYS + 1)).is_none());
        let nested = |levels: usize| {
            // `data` itself is the first level.
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(data_of(&nested(MAX_DATA_DEPTH)).is_some());
        assert!(data_of(&nested(MAX_DATA_DEPTH + 1)).is_none());
        assert!(data_of(r#"{"n":1000000000000}"#).is_some());
        assert!(data_of(r#"{"n":1000000000001}"#).is_none());
        assert!(data_of(r#"{"n":[-1.5e12]}"#).is_none());
        assert!(data_of(r#"[1]"#).is_none());
        assert!(data_of(r#"{"a":1} x"#).is_none());
        // Each of these, as a whole event, gets the value path's verdict.
        for data in [
            r#"{"path":"/a","path":"/b"}"#,
            &wide(Data::MAX_KEYS + 1),
            &nested(MAX_DATA_DEPTH + 1),
            r#"{"n":{"m":1e13}}"#,
        ] {
            let text = format!(
                r#"{{"specversion":"1.0","id":"e1","source":"app","type":"page.view","data":{data}}}"#
            );
            let raw: &RawValue = serde_json::from_str(&text).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert!(well_formed(raw.get(), RULES).is_none(), "{data}");
            assert_eq!(validate_json(raw, RULES).unwrap(), validate(&value, RULES));
        }
    }

    /// The type rules read escaped strings and `conversion.value` the same on the text path.
    #[test]
    fn known_fields_are_read_from_the_text() {
        let text = r#"{"specversion":"1.0","id":"e1","source":"app","type":"api.request","subject":"c",
            "data":{"endpoint":"\/v1\/x","method":"G\u0045T","status":201,"duration_ms":7.5}}"#;
        let e = well_formed(text, RULES).expect("text path");
        assert_eq!(e.facts.endpoint.as_deref(), Some("/v1/x"));
        assert_eq!((e.facts.status, e.facts.duration_ms), (Some(201), 7.5));
        let conversion = |value: &str| {
            format!(
                r#"{{"specversion":"1.0","id":"e1","source":"app","type":"conversion","data":{{"name":"signup","value":{value}}}}}"#
            )
        };
        assert!(well_formed(&conversion(r#"{"amount":800,"currency":"usd"}"#), RULES).is_some());
        assert!(well_formed(&conversion(r#"{"amount":-1,"currency":"usd"}"#), RULES).is_none());
        assert!(well_formed(&conversion("8.5"), RULES).is_none());
        assert!(well_formed(&conversion("null"), RULES).is_some());
    }
}

//! Reading the CSV files: UTF-8 (a leading BOM accepted), a header row, columns in any
//! order, unknown columns ignored. Line numbers count the header as line 1.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use owner_access::domain::{
    Branding, Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, TimeZoneName,
};
use owner_access::repository::EmailEdit;

/// A CSV file that cannot be used, as one sentence.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CSV file's header row: where each column is.
struct Header {
    path: String,
    columns: HashMap<String, usize>,
}

impl Header {
    fn field<'r>(&self, record: &'r csv::StringRecord, column: &str) -> &'r str {
        self.columns
            .get(column)
            .and_then(|&i| record.get(i))
            .map(str::trim)
            .unwrap_or("")
    }

    fn bad(&self, line: usize, what: impl std::fmt::Display) -> InputError {
        InputError(format!("{} line {line}: {what}", self.path))
    }
}

/// A CSV file read a record at a time, never whole: a million-owner file is streamed.
struct Rows {
    header: Header,
    reader: csv::Reader<BufReader<File>>,
    record: csv::StringRecord,
    read: usize,
}

impl Rows {
    fn open(path: &Path, required: &[&str]) -> Result<Rows, InputError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|e| InputError(format!("cannot read {shown}: {e}")))?;
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let starts_with_bom = input
            .fill_buf()
            .map_err(|e| InputError(format!("cannot read {shown}: {e}")))?
            .starts_with(b"\xEF\xBB\xBF");
        if starts_with_bom {
            input.consume(3);
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(input);
        let headers = reader.headers().map_err(|e| {
            InputError(format!(
                "{shown}: cannot read the header row: {}",
                utf8_hint(&e)
            ))
        })?;
        let columns: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_lowercase(), i))
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !columns.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(InputError(format!(
                "{shown}: the header row has no column {}",
                missing.join(", ")
            )));
        }
        Ok(Rows {
            header: Header {
                path: shown,
                columns,
            },
            reader,
            record: csv::StringRecord::new(),
            read: 0,
        })
    }

    /// The next row that is not blank, with its line number, or `None` at the end.
    fn next(&mut self) -> Result<Option<usize>, InputError> {
        loop {
            let more = self.reader.read_record(&mut self.record).map_err(|e| {
                let line = e.position().map_or(self.read + 2, |p| {
                    usize::try_from(p.line()).unwrap_or(usize::MAX)
                });
                self.header.bad(line, utf8_hint(&e))
            })?;
            if !more {
                return Ok(None);
            }
            self.read += 1;
            if self.record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let line = self.record.position().map_or(self.read + 1, |p| {
                usize::try_from(p.line()).unwrap_or(usize::MAX)
            });
            return Ok(Some(line));
        }
    }

    fn field(&self, column: &str) -> &str {
        self.header.field(&self.record, column)
    }

    fn bad(&self, line: usize, what: impl std::fmt::Display) -> InputError {
        self.header.bad(line, what)
    }
}

/// csv's error, saying plainly when the file is not UTF-8.
fn utf8_hint(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => format!("not UTF-8 text ({e})"),
        _ => e.to_string(),
    }
}

/// A small CSV file, read whole (the communities and mass-edit files).
struct Table {
    header: Header,
    rows: Vec<(usize, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path, required: &[&str]) -> Result<Table, InputError> {
        let mut reader = Rows::open(path, required)?;
        let mut rows = Vec::new();
        while let Some(line) = reader.next()? {
            rows.push((line, reader.record.clone()));
        }
        Ok(Table {
            header: reader.header,
            rows,
        })
    }

    fn field<'r>(&self, record: &'r csv::StringRecord, column: &str) -> &'r str {
        self.header.field(record, column)
    }

    fn bad(&self, line: usize, what: impl std::fmt::Display) -> InputError {
        self.header.bad(line, what)
    }
}

/// The communities file: `community_id,name,reply_to`, and optionally `time_zone`
/// (an IANA name; UTC when empty), `logo_url` and `accent_color` (`#rrggbb`).
pub fn read_communities(path: &Path) -> Result<Vec<Community>, InputError> {
    let table = Table::read(path, &["community_id", "name", "reply_to"])?;
    let mut out = Vec::new();
    for (line, record) in &table.rows {
        let id = CommunityId::new(table.field(record, "community_id"))
            .map_err(|e| table.bad(*line, format!("community_id: {e}")))?;
        let name = table.field(record, "name");
        if name.is_empty() {
            return Err(table.bad(*line, "the name is empty"));
        }
        let reply_to = match table.field(record, "reply_to") {
            "" => None,
            raw => Some(
                EmailAddress::parse(raw)
                    .map_err(|e| table.bad(*line, format!("reply_to `{raw}`: {e}")))?,
            ),
        };
        // Optional columns: what the community sets for its letters.
        let time_zone = match table.field(record, "time_zone") {
            "" => None,
            raw => Some(
                TimeZoneName::new(raw).map_err(|e| table.bad(*line, format!("time_zone: {e}")))?,
            ),
        };
        let mut branding = Branding::new();
        let raw = table.field(record, "logo_url");
        if !raw.is_empty() {
            branding = branding
                .with_logo_url(raw)
                .map_err(|e| table.bad(*line, format!("logo_url: {e}")))?;
        }
        let raw = table.field(record, "accent_color");
        if !raw.is_empty() {
            branding = branding
                .with_accent_color(raw)
                .map_err(|e| table.bad(*line, format!("accent_color: {e}")))?;
        }
        let mut community = Community::new(id, name).with_branding(branding);
        community.reply_to = reply_to;
        community.time_zone = time_zone;
        out.push(community);
    }
    Ok(out)
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The columns of the owners file.
pub const OWNER_COLUMNS: [&str; 8] = [
    "community_id",
    "owner_id",
    "property_id",
    "first_name",
    "last_name",
    "property_address",
    "primary_email",
    "registered",
];

/// The owners file, read an owner at a time: an import streams it in chunks instead
/// of holding it whole. Each owner id may appear once (the ids seen so far are kept,
/// which is what a check of the whole file needs).
pub struct OwnerRows {
    rows: Rows,
    seen: HashMap<OwnerId, usize>,
}

impl OwnerRows {
    pub fn open(path: &Path) -> Result<OwnerRows, InputError> {
        Ok(OwnerRows {
            rows: Rows::open(path, &OWNER_COLUMNS)?,
            seen: HashMap::new(),
        })
    }

    /// The next owner and its line, or `None` at the end of the file. Whether its
    /// community exists is the caller's to check (`bad` words the error).
    pub fn next_owner(&mut self) -> Result<Option<(usize, Owner)>, InputError> {
        let Some(line) = self.rows.next()? else {
            return Ok(None);
        };
        let rows = &self.rows;
        let community = CommunityId::new(rows.field("community_id"))
            .map_err(|e| rows.bad(line, format!("community_id: {e}")))?;
        let id = OwnerId::new(rows.field("owner_id"))
            .map_err(|e| rows.bad(line, format!("owner_id: {e}")))?;
        if let Some(first) = self.seen.insert(id.clone(), line) {
            return Err(rows.bad(
                line,
                format!("owner `{id}` already appears on line {first}"),
            ));
        }
        let property = PropertyId::new(rows.field("property_id"))
            .map_err(|e| rows.bad(line, format!("property_id: {e}")))?;
        let registered_raw = rows.field("registered");
        let registered = parse_bool(registered_raw).ok_or_else(|| {
            rows.bad(
                line,
                format!("registered must be true/false, 1/0 or yes/no, not `{registered_raw}`"),
            )
        })?;
        let mut owner = Owner::new(
            id,
            community,
            property,
            rows.field("first_name"),
            rows.field("last_name"),
        )
        .with_property_address(rows.field("property_address"));
        let email = rows.field("primary_email");
        if !email.is_empty() {
            owner = owner.with_primary_email(email);
        }
        if registered {
            owner.registered = Some(owner_access::domain::Registered { at: None });
        }
        Ok(Some((line, owner)))
    }

    pub fn bad(&self, line: usize, what: impl std::fmt::Display) -> InputError {
        self.rows.bad(line, what)
    }
}

/// The mass-edit file: `owner_id,primary_email`.
pub fn read_edits(path: &Path) -> Result<Vec<EmailEdit>, InputError> {
    let table = Table::read(path, &["owner_id", "primary_email"])?;
    let mut out = Vec::new();
    for (line, record) in &table.rows {
        let owner = OwnerId::new(table.field(record, "owner_id"))
            .map_err(|e| table.bad(*line, format!("owner_id: {e}")))?;
        let email = table.field(record, "primary_email");
        out.push(EmailEdit {
            owner,
            email: (!email.is_empty()).then(|| email.to_owned()),
        });
    }
    Ok(out)
}

//! Reading the CSV files: UTF-8 (a leading BOM accepted), a header row, columns in any
//! order, unknown columns ignored. Line numbers count the header as line 1.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use owner_access::domain::{
    AccessStatus, Branding, Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId,
    TimeZoneName,
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

struct Table {
    path: String,
    columns: HashMap<String, usize>,
    rows: Vec<(usize, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path, required: &[&str]) -> Result<Table, InputError> {
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| InputError(format!("cannot read {shown}: {e}")))?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        if std::str::from_utf8(bytes).is_err() {
            return Err(InputError(format!("{shown} is not UTF-8 text")));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers = reader
            .headers()
            .map_err(|e| InputError(format!("{shown}: cannot read the header row: {e}")))?
            .clone();
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
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| InputError(format!("{shown} line {line}: {e}")))?;
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            rows.push((line, record));
        }
        Ok(Table {
            path: shown,
            columns,
            rows,
        })
    }

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

/// The owners file. `known` says whether a community id exists (in the communities file
/// or already stored).
pub fn read_owners(
    path: &Path,
    known: &dyn Fn(&CommunityId) -> bool,
) -> Result<Vec<Owner>, InputError> {
    let columns = [
        "community_id",
        "owner_id",
        "property_id",
        "first_name",
        "last_name",
        "property_address",
        "primary_email",
        "registered",
    ];
    let table = Table::read(path, &columns)?;
    let mut seen: BTreeMap<OwnerId, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (line, record) in &table.rows {
        let community = CommunityId::new(table.field(record, "community_id"))
            .map_err(|e| table.bad(*line, format!("community_id: {e}")))?;
        if !known(&community) {
            return Err(table.bad(
                *line,
                format!("community `{community}` is neither in the communities file nor stored"),
            ));
        }
        let id = OwnerId::new(table.field(record, "owner_id"))
            .map_err(|e| table.bad(*line, format!("owner_id: {e}")))?;
        if let Some(first) = seen.insert(id.clone(), *line) {
            return Err(table.bad(
                *line,
                format!("owner `{id}` already appears on line {first}"),
            ));
        }
        let property = PropertyId::new(table.field(record, "property_id"))
            .map_err(|e| table.bad(*line, format!("property_id: {e}")))?;
        let registered_raw = table.field(record, "registered");
        let registered = parse_bool(registered_raw).ok_or_else(|| {
            table.bad(
                *line,
                format!("registered must be true/false, 1/0 or yes/no, not `{registered_raw}`"),
            )
        })?;
        let mut owner = Owner::new(
            id,
            community,
            property,
            table.field(record, "first_name"),
            table.field(record, "last_name"),
        )
        .with_property_address(table.field(record, "property_address"));
        let email = table.field(record, "primary_email");
        if !email.is_empty() {
            owner = owner.with_primary_email(email);
        }
        if registered {
            owner.access = AccessStatus::Registered { at: None };
        }
        out.push(owner);
    }
    Ok(out)
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

/// The distinct community ids named in an owners file (rows that do not parse are left
/// to [`read_owners`] to report).
pub fn community_ids(path: &Path) -> Result<Vec<CommunityId>, InputError> {
    let table = Table::read(path, &["community_id"])?;
    let mut ids: Vec<CommunityId> = table
        .rows
        .iter()
        .filter_map(|(_, record)| CommunityId::new(table.field(record, "community_id")).ok())
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

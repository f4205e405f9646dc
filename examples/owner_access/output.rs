//! What the commands print: one JSON document on stdout with `--json`, readable lines
//! otherwise. The JSON shapes are a contract other tools rely on.
//!
//! Every value in the readable lines goes through [`shown`]: owners' names and
//! addresses, subjects, server replies and error texts come from other people, and one
//! holding `ESC ] 0 ; … BEL` or `ESC [ 2 J` would retitle or clear the manager's
//! terminal. JSON keeps the exact strings; [`json_text`] writes the characters that
//! JSON leaves raw but a terminal acts on as `\u` escapes, which decode to the same
//! strings.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use owner_access::Roster;
use owner_access::domain::{ActivityEntry, Draft};
use owner_access::invite::is_direction_mark;
use owner_access::{Excluded, Review, SendReport, StopReason};
use serde_json::{Value, json};

use crate::failure::Failure;

/// Whether a terminal may act on `c` or show text around it out of order: control
/// characters (C0, DEL, C1) and the direction marks.
fn acts_on_terminal(c: char) -> bool {
    c.is_control() || is_direction_mark(c)
}

/// A value as text output shows it: `\` for a backslash, `\n`, `\r`, `\t`, and
/// `\u{…}` (hexadecimal) for every other control character and direction mark, so
/// no value can move the cursor, end the line, retitle or clear the terminal, or
/// reorder what is shown, and the escapes cannot be mistaken for the value's own
/// text. Anything else is printed as it is.
pub fn shown(value: &str) -> Cow<'_, str> {
    if !value.chars().any(|c| c == '\\' || acts_on_terminal(c)) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Lines of text output, made safe for a terminal as a whole: what [`shown`] would
/// escape, but line breaks and backslashes, which the lines' own layout uses. The
/// values in them are already [`shown`]; this is the last guard before printing.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && acts_on_terminal(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c != '\n' && acts_on_terminal(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A JSON document as printed: serde_json's text with DEL, the C1 controls and the
/// direction marks (which JSON allows raw in a string) written as `\uXXXX`. They can
/// only occur inside strings, and a JSON reader decodes the escape to the same
/// character: the strings stay exact.
pub fn json_text(value: &Value) -> String {
    let text = value.to_string();
    if !text.chars().any(acts_on_terminal) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_terminal(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn excluded_entry(e: &Excluded) -> Value {
    json!({"owner_id": e.owner.as_str(), "reason": e.reason.code(), "detail": e.reason.to_string()})
}

/// send / draft send / resend / resume / retry, written as it is made: the excluded
/// owners of a million-owner community (200,000 of them) as one `Value` took 200 MB
/// at the end of a send that had run in 130 MB.
pub fn write_report_json(report: &SendReport, out: &mut impl Write) -> io::Result<()> {
    let fields = json!({
        "batch": report.batch.as_ref().map(|b| b.as_str()),
        "recipients": report.recipients,
        "sent": report.sent,
        "pending": report.pending,
        "unrecorded": report.unrecorded,
        "stopped": report.stopped.as_ref().map(ToString::to_string),
        "stop": report.stopped.as_ref().map(StopReason::code),
        "next": next_step(report),
        "summary": report.summary,
    });
    write_object(
        out,
        fields,
        vec![
            (
                "failed",
                Box::new(
                    report
                        .failed
                        .iter()
                        .map(|f| json!({"owner_id": f.owner.as_str(), "error": f.error})),
                ),
            ),
            (
                "skipped",
                Box::new(report.skipped.iter().map(|k| {
                    json!({"owner_id": k.owner.as_str(), "reason": k.reason.code(), "detail": k.reason.to_string()})
                })),
            ),
            (
                "excluded",
                Box::new(report.excluded.iter().map(excluded_entry)),
            ),
        ],
    )?;
    out.write_all(b"\n")
}

/// A JSON object written as it is made: `fields` (an object) as they are, and each of
/// `arrays` one entry at a time, in serde_json's order of keys (sorted), so the bytes
/// are those of [`json_text`] of the whole object.
fn write_object<'a>(
    out: &mut impl Write,
    fields: Value,
    mut arrays: Vec<(&str, Box<dyn Iterator<Item = Value> + 'a>)>,
) -> io::Result<()> {
    let Value::Object(mut fields) = fields else {
        unreachable!("the fields are an object")
    };
    for (key, _) in &arrays {
        fields.insert((*key).to_owned(), Value::Null);
    }
    out.write_all(b"{")?;
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(json_text(&Value::String(key.clone())).as_bytes())?;
        out.write_all(b":")?;
        match arrays.iter().position(|(k, _)| k == key) {
            Some(at) => write_array(out, arrays.swap_remove(at).1)?,
            None => out.write_all(json_text(value).as_bytes())?,
        }
    }
    out.write_all(b"}")
}

/// What to do about a batch that did not end settled, or `None` when it did.
fn next_step(report: &SendReport) -> Option<String> {
    let reason = report.stopped.as_ref()?;
    let batch = report.batch.as_ref().map_or("ID", |b| b.as_str());
    let resume = format!("`resume --batch {batch}`");
    Some(match reason {
        StopReason::Cancelled => {
            format!("{resume} sends the {} still pending", report.pending)
        }
        StopReason::Fatal { .. } => format!(
            "fix what the error names (the credentials, TLS, the server's settings), then {resume}"
        ),
        StopReason::Unreachable { .. } => {
            format!("when the mail server can be reached again, {resume}")
        }
        StopReason::TakenOver { .. } => format!(
            "another sender took this batch over and finishes it; {resume} follows it until the batch is settled"
        ),
        StopReason::StoreUnavailable { .. } => format!(
            "when the database can be written again, {resume}: it waits for this run's claims to run out (one lease) and sends the {} pending{}",
            report.pending,
            if report.unrecorded > 0 {
                format!(
                    ", and again the {} sent whose outcome was not recorded, with the same Message-ID",
                    report.unrecorded
                )
            } else {
                String::new()
            }
        ),
        _ => format!("{resume} sends the {} still pending", report.pending),
    })
}

pub fn report_text(report: &SendReport) -> String {
    let mut out = format!(
        "batch {}: {} recipients, {} sent, {} failed, {} pending, {} excluded\n",
        shown(report.batch.as_ref().map_or("(none)", |b| b.as_str())),
        report.recipients,
        report.sent,
        report.failed.len(),
        report.pending,
        report.excluded.len()
    );
    if report.unrecorded > 0 {
        out.push_str(&format!(
            "unrecorded: {} of the sent were accepted by the server but not recorded\n",
            report.unrecorded
        ));
    }
    if let Some(reason) = &report.stopped {
        out.push_str(&format!("stopped: {}\n", shown(&reason.to_string())));
    }
    if let Some(next) = next_step(report) {
        out.push_str(&format!("next: {}\n", shown(&next)));
    }
    for f in &report.failed {
        out.push_str(&format!(
            "failed {}: {}\n",
            shown(f.owner.as_str()),
            shown(&f.error)
        ));
    }
    // Few, and each one is news (the owner changed since the batch was made): listed.
    for k in &report.skipped {
        out.push_str(&format!(
            "skipped {}: {} ({})\n",
            shown(k.owner.as_str()),
            k.reason,
            k.reason.code()
        ));
    }
    out.push_str(&excluded_counts(&report.excluded));
    out
}

/// Excluded owners counted by reason, not listed: a 3,000-owner community can
/// exclude hundreds. `review` (or `--json`) lists each one.
fn excluded_counts(excluded: &[Excluded]) -> String {
    if excluded.is_empty() {
        return String::new();
    }
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for e in excluded {
        let label = match e.reason.code() {
            "unknown_owner" => "no such owner",
            "registered" => "already registered",
            "no_email" => "no primary email",
            "invalid_email" => "invalid email",
            "shared_email" => "email shared with another owner",
            other => other,
        };
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let listed: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    format!(
        "excluded: {} (`review` or `--json` lists each owner)\n",
        listed.join(", ")
    )
}

/// One excluded owner, for `review`, which lists each one.
fn excluded_line(e: &Excluded) -> String {
    format!(
        "excluded {}: {}\n",
        shown(e.owner.as_str()),
        shown(&e.reason.to_string())
    )
}

/// `review --json`, written as it is made: a million recipients as one `Value` took
/// about 1 GB before the first byte was printed. The bytes are those of
/// [`json_text`] of the document `{"excluded": [...], "problems": [...],
/// "recipients": [...]}`, one entry at a time.
pub fn write_review_json(review: &Review, out: &mut impl Write) -> io::Result<()> {
    write_object(
        out,
        json!({}),
        vec![
            (
                "recipients",
                Box::new(review.recipients.iter().map(|r| {
                    json!({"owner_id": r.owner.as_str(), "email": r.email.as_str(), "delivered_to": r.email.smtp_form()})
                })),
            ),
            ("excluded", Box::new(review.excluded.iter().map(excluded_entry))),
            (
                "problems",
                Box::new(review.problems.iter().map(|p| Value::String(p.to_string()))),
            ),
        ],
    )?;
    out.write_all(b"\n")
}

/// A JSON array of these values, each written as [`json_text`] writes it.
fn write_array(out: &mut impl Write, values: impl Iterator<Item = Value>) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(json_text(&value).as_bytes())?;
    }
    out.write_all(b"]")
}

pub fn review_text(review: &Review) -> String {
    let mut out = format!(
        "{} recipients, {} excluded, {} problems\n",
        review.recipients.len(),
        review.excluded.len(),
        review.problems.len()
    );
    // The address as it will be delivered, which is what To shows.
    for r in &review.recipients {
        out.push_str(&format!(
            "to {} <{}>\n",
            shown(r.owner.as_str()),
            shown(r.email.smtp_form())
        ));
    }
    for e in &review.excluded {
        out.push_str(&excluded_line(e));
    }
    for p in &review.problems {
        out.push_str(&format!("problem: {}\n", shown(&p.to_string())));
    }
    out
}

pub fn roster_json(roster: &Roster) -> Value {
    let c = &roster.counts;
    json!({
        "counts": {
            "not_invited": c.not_invited,
            "invited": c.invited,
            "expired": c.expired,
            "registered": c.registered,
            "percent_registered": c.percent_registered,
        },
        "owners": roster.rows.iter().map(|row| json!({
            "owner_id": row.owner.id.as_str(),
            "property_id": row.owner.property.as_str(),
            "name": row.owner.full_name(),
            "email": row.owner.primary_email,
            "status": row.state,
            "eligible": row.eligibility.is_eligible(),
            "reason": row.eligibility.reason().map(|r| r.code()),
        })).collect::<Vec<_>>(),
    })
}

pub fn roster_text(roster: &Roster) -> String {
    let c = &roster.counts;
    let mut out = format!(
        "not invited {}, invited {}, expired {}, registered {} ({:.1}% registered)\n",
        c.not_invited, c.invited, c.expired, c.registered, c.percent_registered
    );
    for row in &roster.rows {
        let status = serde_json::to_value(row.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<12} {:<28} {:<32} {:<12} {}\n",
            shown(row.owner.id.as_str()),
            shown(row.owner.property.as_str()),
            shown(&row.owner.full_name()),
            shown(row.owner.primary_email.as_deref().unwrap_or("-")),
            status,
            shown(
                &row.eligibility
                    .reason()
                    .map_or_else(|| "eligible".to_owned(), ToString::to_string)
            ),
        ));
    }
    out
}

pub fn drafts_json(drafts: &[Draft]) -> Value {
    Value::Array(
        drafts
            .iter()
            .map(|d| {
                json!({
                    "draft": d.id.as_str(),
                    "created_at": d.created_at.to_rfc3339(),
                    "updated_at": d.updated_at.to_rfc3339(),
                    "recipients": d.invite.selection.len(),
                    "subject": d.invite.subject,
                })
            })
            .collect(),
    )
}

pub fn drafts_text(drafts: &[Draft]) -> String {
    drafts
        .iter()
        .map(|d| {
            format!(
                "{} {} {} selected: {}\n",
                shown(d.id.as_str()),
                d.created_at,
                d.invite.selection.len(),
                shown(&d.invite.subject)
            )
        })
        .collect()
}

pub fn activity_json(entries: &[ActivityEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut v {
                    map.remove("community");
                }
                v
            })
            .collect(),
    )
}

pub fn activity_text(entries: &[ActivityEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let v = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let mut rest = v.clone();
            if let Value::Object(map) = &mut rest {
                map.remove("kind");
            }
            format!("{} {} {}\n", e.at, shown(&kind), json_text(&rest))
        })
        .collect()
}

/// Prints a document: its JSON with `--json`, else its text with nothing a terminal
/// would act on.
pub fn print_out(json: bool, value: Value, text: String) {
    if json {
        println!("{}", json_text(&value));
    } else {
        print!("{}", terminal_safe(&text));
    }
}

/// Writes a document to stdout through a buffer, as it is made.
pub fn write_stdout(
    write: impl FnOnce(&mut io::BufWriter<io::StdoutLock<'static>>) -> io::Result<()>,
) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::input(format!("writing to stdout: {e}")))
}

//! What the commands print: one JSON document on stdout with `--json`, readable lines
//! otherwise. The JSON shapes are a contract other tools rely on.

use owner_access::domain::{ActivityEntry, Draft};
use owner_access::eligibility::Roster;
use owner_access::{Excluded, Review, SendReport};
use serde_json::{Value, json};

fn excluded_json(excluded: &[Excluded]) -> Value {
    Value::Array(
        excluded
            .iter()
            .map(|e| json!({"owner_id": e.owner.as_str(), "reason": e.reason.code(), "detail": e.reason.to_string()}))
            .collect(),
    )
}

/// send / draft send / resend / resume / retry.
pub fn report_json(report: &SendReport) -> Value {
    json!({
        "batch": report.batch.as_ref().map(|b| b.as_str()),
        "recipients": report.recipients,
        "sent": report.sent,
        "pending": report.pending,
        "failed": report.failed.iter().map(|f| json!({"owner_id": f.owner.as_str(), "error": f.error})).collect::<Vec<_>>(),
        "excluded": excluded_json(&report.excluded),
        "stopped": report.stopped.as_ref().map(ToString::to_string),
        "summary": report.summary,
    })
}

pub fn report_text(report: &SendReport) -> String {
    let mut out = format!(
        "batch {}: {} recipients, {} sent, {} failed, {} pending, {} excluded\n",
        report.batch.as_ref().map_or("(none)", |b| b.as_str()),
        report.recipients,
        report.sent,
        report.failed.len(),
        report.pending,
        report.excluded.len()
    );
    if let Some(reason) = &report.stopped {
        out.push_str(&format!("stopped: {reason}\n"));
    }
    for f in &report.failed {
        out.push_str(&format!("failed {}: {}\n", f.owner, f.error));
    }
    for e in &report.excluded {
        out.push_str(&format!("excluded {}: {}\n", e.owner, e.reason));
    }
    out
}

pub fn review_json(review: &Review) -> Value {
    json!({
        "recipients": review.recipients.iter().map(|r| json!({"owner_id": r.owner.id.as_str(), "email": r.email.as_str()})).collect::<Vec<_>>(),
        "excluded": excluded_json(&review.excluded),
        "problems": review.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

pub fn review_text(review: &Review) -> String {
    let mut out = format!(
        "{} recipients, {} excluded, {} problems\n",
        review.recipients.len(),
        review.excluded.len(),
        review.problems.len()
    );
    for r in &review.recipients {
        out.push_str(&format!("to {} <{}>\n", r.owner.id, r.email));
    }
    for e in &review.excluded {
        out.push_str(&format!("excluded {}: {}\n", e.owner, e.reason));
    }
    for p in &review.problems {
        out.push_str(&format!("problem: {p}\n"));
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
            row.owner.id.as_str(),
            row.owner.property.as_str(),
            row.owner.full_name(),
            row.owner.primary_email.as_deref().unwrap_or("-"),
            status,
            row.eligibility
                .reason()
                .map_or_else(|| "eligible".to_owned(), ToString::to_string),
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
                d.id,
                d.created_at,
                d.invite.selection.len(),
                d.invite.subject
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
            format!("{} {kind} {rest}\n", e.at)
        })
        .collect()
}

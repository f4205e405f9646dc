//! A SQLite file written by an earlier schema version opens, is migrated in place,
//! and keeps what it held: drafts and batches stored before the invite kept its From
//! and portal URL load with none (the service's settings, or the batch's own, apply).
#![cfg(feature = "sqlite")]

use owner_access::adapters::sqlite::{SCHEMA_VERSION, SqliteRepository};
use owner_access::domain::{BatchId, CommunityId, DraftId};
use owner_access::prelude::*;

/// A version-1 file, made the way version 1 made it: its schema and rows written with
/// plain SQL, no code of this build involved.
fn version_one_file(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(include_str!(
        "../src/adapters/sqlite/schema/legacy/0001_initial.sql"
    ))
    .unwrap();
    conn.pragma_update(None, "application_id", 0x4F41_6363_i64)
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute_batch(
        "INSERT INTO communities (id, name, reply_to) VALUES ('c1', 'Maple Grove', NULL);
         INSERT INTO invites (id, community, subject, text_body, html_body, reply_to, summary_to, draft)
             VALUES (1, 'c1', 'Old draft', 'Hi {{registration_url}}', NULL, 'board@maple.example', NULL, 'd-old');
         INSERT INTO invite_selection (invite, owner) VALUES (1, 'o1');
         INSERT INTO drafts (id, invite, community, created_at, updated_at) VALUES ('d-old', 1, 'c1', 0, 0);
         INSERT INTO invites (id, community, subject, text_body, html_body, reply_to, summary_to, draft)
             VALUES (2, 'c1', 'Old batch', 'Hi {{registration_url}}', NULL, NULL, NULL, NULL);
         INSERT INTO batches (id, community, invite, sender_name, sender_address, portal_url,
                              token_ttl_seconds, created_at, resend)
             VALUES ('b-old', 'c1', 2, 'Maple Board', 'board@maple.example',
                     'https://portal.example.org/register', 86400, 0, 0);",
    )
    .unwrap();
}

#[tokio::test]
async fn a_version_one_file_is_migrated_and_its_drafts_and_batches_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    version_one_file(&path);

    let repo = SqliteRepository::open(&path).await.unwrap();
    let draft = repo
        .draft(&DraftId::new("d-old").unwrap())
        .await
        .unwrap()
        .expect("the old draft");
    assert_eq!(draft.invite.subject, "Old draft");
    assert_eq!(
        draft.invite.reply_to.as_deref(),
        Some("board@maple.example")
    );
    assert_eq!(draft.invite.from, None);
    assert_eq!(draft.invite.portal_url, None);
    let batch = repo
        .batch(&BatchId::new("b-old").unwrap())
        .await
        .unwrap()
        .expect("the old batch");
    assert_eq!(batch.portal_url, "https://portal.example.org/register");
    assert_eq!(batch.sender.name.as_deref(), Some("Maple Board"));
    assert_eq!(batch.invite.from, None);
    drop(repo);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);

    // A draft saved after the upgrade keeps both.
    let repo = SqliteRepository::open(&path).await.unwrap();
    let mut newer = draft.clone();
    newer.id = DraftId::new("d-new").unwrap();
    newer.invite.draft = Some(newer.id.clone());
    newer.invite.from = Some("Board <board@maple.example>".into());
    newer.invite.portal_url = Some("https://portal.example.org/oak".into());
    repo.save_draft(&newer).await.unwrap();
    let loaded = repo.draft(&newer.id).await.unwrap().unwrap();
    assert_eq!(loaded, newer);
    assert_eq!(
        repo.drafts(&CommunityId::new("c1").unwrap())
            .await
            .unwrap()
            .len(),
        2
    );
}

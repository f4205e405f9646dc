//! The `web_admin` example in headless Chromium, used as a manager and an owner would:
//! sign in, filter, Select All, compose, save a draft and reopen it, review, send to
//! a few hundred owners into aiosmtpd (the outbox without it) and watch the progress
//! to the end, resend one owner, open an owner's link from the captured message and
//! register, and see them move to Registered; a batch stopped by an unreachable server
//! resumed after a restart, a refused owner listed and retried. Then bad input and the safety rules: pages refused without sign-in, a
//! POST without the CSRF token refused, markup in owner data shown as text, an
//! oversized attachment, a bad Reply-To and a line break in the subject shown next to
//! their fields with nothing lost.
//!
//! Without Chromium and chromedriver the tests say so and do not run; with `CI=true`
//! that is a failure. Screenshots of each screen go to `target/web_admin_screenshots`
//! (or `OWNER_ACCESS_SCREENSHOTS`).

mod web_admin_support;

use std::time::Instant;

use serde_json::json;
use web_admin_support::{Server, SmtpCapture, browser, recipient, token_in};

/// The demo community the example loads on first start.
const COMMUNITY: &str = "maple-grove";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_invites_and_an_owner_registers() {
    let Some(b) = browser().await else { return };
    // Into a real SMTP server when there is one (always in CI), else the outbox.
    let smtp = SmtpCapture::start();
    let server = match &smtp {
        Some(capture) => Server::start(&["--smtp", &capture.url]),
        None => Server::start(&[]),
    };
    let messages = || match &smtp {
        Some(capture) => capture.messages(),
        None => server.messages(),
    };
    let base = server.base.clone();

    // Communities.
    b.sign_in(&base).await;
    let row = format!("#communities tr[data-community={COMMUNITY}]");
    let eligible: usize = b
        .text(&format!("{row} .eligible-count"))
        .await
        .parse()
        .unwrap();
    assert!(eligible > 200, "{eligible}");
    b.shots("communities").await;

    // Owner Access > Manage: Unregistered, owners with emails, Apply.
    b.click(&format!("{row} a")).await;
    b.find("#tab-unregistered.active").await;
    b.find("#email-filter")
        .await
        .select_by_value("with")
        .await
        .unwrap();
    b.click("#apply").await;
    b.find("#roster").await;
    assert!(b.url().await.contains("email=with"), "{}", b.url().await);
    let rows = b.all("#roster tbody tr").await.len();
    let picks = b.all("#roster input.pick").await;
    assert_eq!(
        picks.len(),
        eligible,
        "one checkbox per owner who can be invited"
    );
    assert!(rows > picks.len(), "the flagged owners are listed too");
    let flagged = b.text("#roster .reason").await;
    assert!(!flagged.is_empty());

    // Select All, untick one: the Actions count follows.
    b.click("#select-all").await;
    assert_eq!(
        b.text("#actions summary").await,
        format!("Actions ({eligible})")
    );
    picks[0].click().await.unwrap();
    let selected = eligible - 1;
    assert_eq!(
        b.text("#actions summary").await,
        format!("Actions ({selected})")
    );
    b.shots("manage").await;
    b.top_shot("manage").await;
    b.click("#actions summary").await;
    assert_eq!(
        b.text("#send-invite").await,
        format!("Send Owner Access Invite ({selected})")
    );

    // Send Message: the count, the prefilled message; edit the subject, Save as Draft.
    b.click("#send-invite").await;
    assert_eq!(b.text("#recipient-count").await, selected.to_string());
    assert!(!b.value("#text_body").await.is_empty(), "prefilled");
    assert_eq!(b.value("#reply_to").await, "board@maplegrove.example.org");
    b.shots("compose").await;
    let subject = "Your {{community.name}} owner portal: register by {{expires_on}}";
    b.fill("#subject", subject).await;
    b.click("#save-draft").await;
    assert!(b.text("#flash").await.starts_with("Draft "));
    b.shots("activity-draft").await;

    // Reopen the draft from the activity feed: the subject and selection are kept.
    b.click("#drafts a.open-draft").await;
    assert_eq!(b.value("#subject").await, subject);
    assert_eq!(b.text("#recipient-count").await, selected.to_string());

    // Generate & Review.
    b.click("#generate-review").await;
    assert_eq!(b.text("#review-recipients").await, selected.to_string());
    assert_eq!(b.text("#review-problems").await, "0");
    let preview_subject = b.text("#preview-subject").await;
    assert!(
        preview_subject.starts_with("Your Maple Grove HOA owner portal: register by "),
        "{preview_subject}"
    );
    b.shots("review").await;
    b.top_shot("review").await;

    // Send, and watch the progress reach the end.
    let started = Instant::now();
    b.click("#send").await;
    b.find("#progress").await;
    let state = b
        .wait_text("#state", |t| t.starts_with("Finished"), 120)
        .await;
    let took = started.elapsed();
    assert_eq!(b.text("#sent").await, selected.to_string(), "{state}");
    assert_eq!(b.text("#pending").await, "0");
    assert_eq!(b.text("#failed").await, "0");
    assert_eq!(messages().len(), selected);
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("web admin: {selected} sent in {took:.1?} (click to Finished)\n").as_bytes(),
    );
    b.shots("sending").await;

    // The activity feed shows the batch.
    b.goto(&format!("{base}/c/{COMMUNITY}/activity")).await;
    let feed = b.text("#feed").await;
    assert!(feed.contains(&format!("{selected} recipients")), "{feed}");
    assert!(
        feed.contains(&format!("{selected} sent, 0 failed, 0 pending")),
        "{feed}"
    );

    // Resend one invited owner from the Invited tab.
    b.goto(&format!("{base}/c/{COMMUNITY}/manage?tab=invited"))
        .await;
    let resent_row = b.find("#roster tr[data-state=invited]").await;
    let resent = resent_row.attr("data-owner").await.unwrap().unwrap();
    let resent_to = b
        .text(&format!("#roster tr[data-owner='{resent}'] td.email"))
        .await;
    b.click(&format!("#roster tr[data-owner='{resent}'] button.resend"))
        .await;
    let flash = b.text("#flash").await;
    assert!(
        flash.starts_with(&format!("Resent the registration email to {resent}")),
        "{flash}"
    );
    assert_eq!(messages().len(), selected + 1);

    // Another owner opens their link from the captured message: GET shows the form and
    // changes nothing (a second look, as a mail scanner's, still works).
    let message = messages()
        .into_iter()
        .find(|m| recipient(m) != resent_to)
        .unwrap();
    let address = recipient(&message);
    let link = format!("{base}/register?token={}", token_in(&message));
    b.goto(&link).await;
    assert!(!b.text("#owner-name").await.is_empty());
    b.shots("register").await;
    b.goto(&link).await;
    b.click("#complete").await;
    assert!(b.text("#registered").await.starts_with("Thank you"));
    b.shots("registered").await;
    // Used: the same link now gets the one generic message.
    b.goto(&link).await;
    assert_eq!(
        b.text("#error").await,
        "this registration link is not valid."
    );

    // The owner moved to Registered; the feed says so.
    b.goto(&format!(
        "{base}/c/{COMMUNITY}/manage?tab=registered&q={address}"
    ))
    .await;
    let row = b.find("#roster tr[data-state=registered]").await;
    let owner = row.attr("data-owner").await.unwrap().unwrap();
    assert_eq!(b.text("#roster td.email").await, address);
    b.goto(&format!("{base}/c/{COMMUNITY}/activity")).await;
    assert!(
        b.text("#feed")
            .await
            .contains(&format!("Owner {owner} registered"))
    );
    b.shots("activity").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_shown_next_to_its_field_and_nothing_is_lost() {
    let Some(b) = browser().await else { return };
    // A small attachment limit, so that an oversized file is quick to make.
    let server = Server::start(&["--max-attachment-kib", "64", "--demo-owners", "40"]);
    let base = server.base.clone();

    // Without sign-in: admin pages and POSTs go to the sign-in page, nothing shown.
    for request in [
        format!("GET /c/{COMMUNITY}/manage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!(
            "POST /c/{COMMUNITY}/resend HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\n\
             resend_owner=maple-0002"
        ),
    ] {
        let response = server.raw(&request);
        assert!(response.starts_with("HTTP/1.1 303"), "{response}");
        assert!(response.contains("location: /login"), "{response}");
    }
    // The owner's page is open, and says the same for any bad link.
    let response = server
        .raw("GET /register?token=not-a-token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.contains("referrer-policy: no-referrer"),
        "{response}"
    );
    assert!(response.contains("this registration link is not valid"));

    b.sign_in(&base).await;

    // A POST without the session's CSRF token, or with another one, is refused.
    for body in ["single=maple-0002", "single=maple-0002&csrf=forged"] {
        let status = b
            .client
            .execute_async(
                "const [url, body, done] = arguments;
                 fetch(url, {method: 'POST', body: new URLSearchParams(body), redirect: 'manual'})
                   .then(r => done(r.status));",
                vec![json!(format!("{base}/c/{COMMUNITY}/compose")), json!(body)],
            )
            .await
            .unwrap();
        assert_eq!(status, json!(403), "{body}");
    }

    // An owner named <script>alert(1)</script> shows as text.
    b.goto(&format!("{base}/c/{COMMUNITY}/manage?tab=all&q=Markup"))
        .await;
    let name = b.text("#roster tr[data-owner=maple-0001] td.name").await;
    assert!(
        name.starts_with("<script>alert(1)</script> Markup"),
        "{name}"
    );
    assert!(b.client.get_alert_text().await.is_err(), "no script ran");
    b.shots("escaped").await;

    // One owner's own Invite button opens Send Message for them alone.
    b.click("#roster tr[data-owner=maple-0001] button.invite-one")
        .await;
    assert_eq!(b.text("#recipient-count").await, "1");

    // An attachment over the limit: the library's error next to the field; the typed
    // subject and the file stay.
    let big = server.dir.path().join("minutes.pdf");
    std::fs::write(&big, vec![b'%'; 65 * 1024 + 1]).unwrap();
    let subject = "Welcome to {{community.name}}";
    b.fill("#subject", subject).await;
    b.find("#files")
        .await
        .send_keys(&big.display().to_string())
        .await
        .unwrap();
    b.click("#generate-review").await;
    let error = b.text("#attachments-error").await;
    assert!(
        error.contains("minutes.pdf") && error.contains("over the limit of 65536"),
        "{error}"
    );
    assert_eq!(b.value("#subject").await, subject);
    assert!(b.text("#attachments .file-name").await == "minutes.pdf");
    b.shots("compose-errors").await;

    // Remove it and type a Reply-To that is not an address.
    b.click("#attachments input[name=remove_attachment]").await;
    b.fill("#reply_to", "board at maple").await;
    b.click("#generate-review").await;
    assert!(
        b.text("#reply_to-error")
            .await
            .starts_with("the Reply-To `board at maple` is not a valid address")
    );
    assert!(b.all("#attachments .file-name").await.is_empty());
    assert_eq!(b.value("#subject").await, subject);

    // A line break in the subject (pasted, or sent by a script: a text input strips
    // them, so the form is posted as it is with the subject changed).
    b.fill("#reply_to", "board@maplegrove.example.org").await;
    b.client
        .execute_async(
            "const done = arguments[0];
             const form = document.getElementById('compose');
             const data = new FormData(form);
             data.set('subject', 'Hello\\r\\nBcc: everyone@example.org');
             data.set('action', 'review');
             fetch(form.getAttribute('action'), {method: 'POST', body: data}).then(r => r.text()).then(html => {
               document.open(); document.write(html); document.close(); done(true);
             });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        b.text("#subject-error").await,
        "the Subject contains a line break"
    );
    assert_eq!(b.value("#reply_to").await, "board@maplegrove.example.org");

    // Fixed, it reviews.
    b.goto(&b.url().await).await;
    b.fill("#subject", subject).await;
    b.click("#generate-review").await;
    assert_eq!(b.text("#review-problems").await, "0");

    // Mass Edit: all or nothing, every bad row shown, the text kept.
    b.goto(&format!("{base}/c/{COMMUNITY}/mass-edit")).await;
    let edits = "owner_id,primary_email\nmaple-0002,new.address@example.org\nmaple-0004,not an address\nnobody,x@example.org";
    b.fill("#edits", edits).await;
    b.click("#apply-edits").await;
    let problems = b.text("#mass-edit-problems").await;
    assert!(
        problems.contains("maple-0004: `not an address` is not a valid address"),
        "{problems}"
    );
    assert!(
        problems.contains("nobody: no such owner here"),
        "{problems}"
    );
    assert_eq!(b.value("#edits").await.replace("\r\n", "\n"), edits);
    b.shots("mass-edit-errors").await;

    // Signed out, the pages are refused again.
    b.goto(&format!("{base}/")).await;
    b.click(".logout button").await;
    b.goto(&format!("{base}/c/{COMMUNITY}/manage")).await;
    assert!(b.url().await.ends_with("/login"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_batch_offers_resume_after_a_restart() {
    let Some(b) = browser().await else { return };
    // Nothing listens on this port: the run stops as unreachable with every delivery
    // pending, and nobody is failed.
    let dead = web_admin_support::free_port();
    let smtp = format!("smtp://127.0.0.1:{dead}");
    let server = Server::start(&["--smtp", &smtp, "--demo-owners", "40"]);
    b.sign_in(&server.base).await;
    b.goto(&format!(
        "{}/c/{COMMUNITY}/manage?tab=unregistered&email=with",
        server.base
    ))
    .await;
    b.click("#select-all").await;
    b.click("#actions summary").await;
    b.click("#send-invite").await;
    b.click("#generate-review").await;
    let recipients = b.text("#review-recipients").await;
    b.click("#send").await;
    let state = b
        .wait_text("#state", |t| t.starts_with("Interrupted"), 60)
        .await;
    assert!(state.contains("unreachable"), "{state}");
    assert_eq!(b.text("#pending").await, recipients);
    assert_eq!(b.text("#failed").await, "0");
    b.find("#resume").await;
    b.shots("interrupted").await;
    let batch_path = b.url().await.replacen(&server.base, "", 1);

    // The server restarts, with a mail server now (one that refuses one owner, when
    // aiosmtpd is there; else the outbox): the page offers Resume, and Resume sends
    // every pending owner once.
    let refused = "chiara.lee2@maple.example.org"; // maple-0002 in the demo data
    let smtp = SmtpCapture::refusing(&[refused]);
    let dir = server.stop();
    let server = match &smtp {
        Some(capture) => Server::start_in(dir, &["--demo-owners", "40", "--smtp", &capture.url]),
        None => Server::start_in(dir, &["--demo-owners", "40"]),
    };
    b.sign_in(&server.base).await;
    b.goto(&format!("{}{batch_path}", server.base)).await;
    assert!(b.text("#state").await.starts_with("Interrupted"));
    b.click("#resume").await;
    b.wait_text("#state", |t| t.starts_with("Finished"), 60)
        .await;
    assert_eq!(b.text("#pending").await, "0");
    let recipients: usize = recipients.parse().unwrap();
    let Some(capture) = &smtp else {
        assert_eq!(b.text("#sent").await, recipients.to_string());
        assert_eq!(
            server.messages().len(),
            recipients,
            "each pending owner once"
        );
        b.close().await;
        return;
    };
    assert_eq!(b.text("#sent").await, (recipients - 1).to_string());
    assert_eq!(
        capture.messages().len(),
        recipients - 1,
        "each pending owner once"
    );
    // The refused owner is listed with the server's answer, and Retry tries again.
    assert_eq!(b.text("#failed").await, "1");
    let failed = b.text("#failed-list").await;
    assert!(
        failed.contains("maple-0002") && failed.contains("550"),
        "{failed}"
    );
    b.shots("failed").await;
    b.click_to_new_page("#retry").await;
    b.wait_text("#state", |t| t.starts_with("Finished"), 60)
        .await;
    assert_eq!(b.text("#failed").await, "1", "refused again");
    assert_eq!(capture.messages().len(), recipients - 1);
    b.close().await;
}

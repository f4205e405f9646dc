//! Both alternatives of a message say the same thing: an invite with only an HTML
//! body gets a text part made from it (its words, its links as `text (URL)`), with
//! the same personal link as the HTML part.

mod common;

use common::*;
use owner_access::Selection;
use owner_access::invite::Problem;

/// The decoded text/html part.
fn html_part(message: &[u8]) -> String {
    let parsed = mailparse::parse_mail(message).unwrap();
    let mut stack = vec![parsed];
    while let Some(part) = stack.pop() {
        if part.ctype.mimetype == "text/html" {
            return part.get_body().unwrap();
        }
        stack.extend(part.subparts);
    }
    panic!("no text/html part");
}

const LETTER: &str = r#"<!DOCTYPE html>
<html><head><title>Welcome</title><style>.x { color: #333 }</style></head>
<body>
<p>Dear {{owner.full_name}},</p>
<p>The board of <b>{{community.name}}</b> asks you to join the portal &mdash; it takes
   two minutes.</p>
<p><a href="{{registration_url}}">Create your account</a></p>
<ul><li>Pay dues online</li><li>Read the minutes &amp; the budget</li></ul>
<p>Questions? Write to <a href="mailto:board@maple.example">board@maple.example</a>.</p>
</body></html>"#;

#[tokio::test]
async fn an_html_only_invite_gets_a_text_part_with_its_words_and_its_link() {
    let w = world(2).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::of([oid("e0"), oid("e1")]))
        .await
        .unwrap()
        .with_html_body(LETTER);
    assert_eq!(
        invite.text_body, None,
        "the default text went with the default letter"
    );
    let review = w.service.review(&invite).await.unwrap();
    assert!(review.problems.is_empty(), "{:?}", review.problems);
    let report = w.service.send(review).await.unwrap();
    assert_eq!(report.sent, 2);
    for message in w.transport.messages() {
        let text = text_part(&message.bytes).replace("\r\n", "\n");
        let html = html_part(&message.bytes);
        let token = token_in(&message.bytes);
        let link = format!("{PORTAL}?token={token}");
        assert!(
            html.contains(&format!("href=\"{}\"", link.replace('=', "&#x3D;"))),
            "{html}"
        );
        assert!(
            text.contains(&format!("Create your account ({link})")),
            "the link as `text (URL)`: {text}"
        );
        for words in [
            "Dear Firste",
            "The board of Maple Grove HOA asks you to join the portal — it takes two minutes.",
            "- Pay dues online\n- Read the minutes & the budget",
            "Questions? Write to board@maple.example.",
        ] {
            assert!(
                text.contains(words),
                "`{words}` is not in the text part: {text}"
            );
        }
        assert!(!text.contains('<') && !text.contains("&amp;") && !text.contains("color"));
        assert!(
            !text.contains("Welcome"),
            "the title is not body text: {text}"
        );
    }
}

#[tokio::test]
async fn an_html_body_whose_link_is_not_a_link_is_a_problem_of_the_html_body() {
    let w = world(1).await;
    // The link is output (so the HTML part has it) but only inside an attribute the
    // text cannot show: the text part would have no link.
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap()
        .with_html_body(r#"<p data-link="{{registration_url}}">Hello</p>"#);
    let review = w.service.review(&invite).await.unwrap();
    assert_eq!(
        review.problems,
        [Problem::MissingRegistrationLink {
            part: owner_access::invite::TemplatePart::Html
        }]
    );

    let mut neither = invite.clone();
    neither.html_body = None;
    let review = w.service.review(&neither).await.unwrap();
    assert_eq!(review.problems, [Problem::MissingBody]);
}

//! The default invitation reads like a professional letter in both parts: greeting,
//! community, property, the button and the plain link, the expiry as a person reads
//! it in the community's time zone, whom to ask, and a line for an owner who did not
//! expect it; the community's branding where the host gave one. Both parts say the
//! same thing.

mod common;

use std::collections::BTreeSet;

use common::*;
use owner_access::domain::{Branding, Community, TimeZoneName};
use owner_access::invite::{Problem, TemplatePart};
use owner_access::prelude::*;
use owner_access::template::{DEFAULT_HTML, DEFAULT_TEXT, html_to_text_template};
use owner_access::{Preview, Selection};

async fn preview_for(w: &World, owner: &str) -> Preview {
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid(owner)))
        .await
        .unwrap();
    let review = w.service.review(&invite).await.unwrap();
    assert!(review.problems.is_empty(), "{:?}", review.problems);
    w.service.preview(&review, &oid(owner)).await.unwrap()
}

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(str::to_lowercase)
        .collect()
}

#[tokio::test]
async fn the_default_letter_has_every_part_of_a_professional_letter() {
    let w = world(1).await;
    let p = preview_for(&w, "e0").await;
    // t0 is 26 November 2026 14:00 UTC; links last 14 days.
    let expiry = "10 December 2026 at 14:00 UTC";
    for (part, body) in [("text", &p.text), ("html", &p.html)] {
        for needed in [
            "Dear Firste0,",
            "Maple Grove HOA invites you to register for its online owner portal",
            "e0 Elm Street",
            "It expires on",
            expiry,
            "sign in at any time at",
            "board@maplegrove.example.org",
            "If you did not expect this invitation, you can ignore it",
            "Kind regards,",
        ] {
            assert!(
                body.contains(needed),
                "the {part} part lacks `{needed}`:\n{body}"
            );
        }
        assert!(
            !body.contains("2026-12-10"),
            "no ISO date in the {part} part"
        );
    }
    assert!(
        p.text
            .contains("Questions? Reply to this email or write to board@maplegrove.example.org.")
    );
    // The button and the plain link below it, both the personal link.
    let link = format!("{PORTAL}?token&#x3D;");
    assert_eq!(
        p.html.matches(&format!("href=\"{link}")).count(),
        2,
        "{}",
        p.html
    );
    assert!(p.html.contains(">Register for the owner portal</a>"));
    assert!(
        p.html
            .contains("overflow-wrap: anywhere; word-break: break-word;")
    );
    // No branding given: no image, the default accent colour.
    assert!(!p.html.contains("<img"));
    assert!(p.html.contains("background-color: #1a5fb4;"));
}

#[tokio::test]
async fn both_parts_of_the_default_letter_say_the_same_thing() {
    let w = world(1).await;
    let p = preview_for(&w, "e0").await;
    // The HTML part read as text, the way spam filters compare alternatives.
    let from_html = words(&html_to_text_template(&p.html));
    let text = words(&p.text);
    let shared = from_html.intersection(&text).count();
    let union = from_html.union(&text).count();
    assert!(
        shared * 100 >= union * 90,
        "the parts share {shared} of {union} words; only in HTML: {:?}; only in text: {:?}",
        from_html.difference(&text).collect::<Vec<_>>(),
        text.difference(&from_html).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_expiry_is_shown_in_the_communitys_time_zone_and_its_branding_is_used() {
    let w = world(1).await;
    let community = Community::new(w.community.clone(), "Maple Grove HOA")
        .with_time_zone(TimeZoneName::new("America/Chicago").unwrap())
        .with_branding(
            Branding::new()
                .with_logo_url("https://maple.example.org/logo.png?v=2&s=96")
                .unwrap()
                .with_accent_color("#2E6B30")
                .unwrap(),
        );
    w.repo.upsert_community(&community).await.unwrap();
    let p = preview_for(&w, "e0").await;
    for body in [&p.text, &p.html] {
        assert!(body.contains("10 December 2026 at 08:00 CST"), "{body}");
    }
    assert!(
        p.html.contains(
            "<img src=\"https://maple.example.org/logo.png?v&#x3D;2&amp;s&#x3D;96\" alt=\"Maple Grove HOA\""
        ),
        "{}",
        p.html
    );
    assert!(p.html.contains("background-color: #2e6b30;"));
    assert!(!p.html.contains("#1a5fb4"));
    // No Reply-To: whom to ask still has an answer.
    let invite = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap();
    let mut invite = invite;
    invite.reply_to = None;
    let review = w.service.review(&invite).await.unwrap();
    let p = w.service.preview(&review, &oid("e0")).await.unwrap();
    assert!(
        p.text
            .contains("Questions? Please contact the Maple Grove HOA management office."),
        "{}",
        p.text
    );
}

#[tokio::test]
async fn the_branding_fields_are_merge_fields_and_unknown_names_still_a_problem() {
    let w = world(1).await;
    let base = w
        .service
        .compose(&w.community, &Selection::single(oid("e0")))
        .await
        .unwrap();
    let known = base.clone().with_bodies(
        "{{reply_to}} {{registration_url}}",
        "<p style=\"color: {{community.accent_color}}\">{{#if community.logo_url}}<img src=\"{{community.logo_url}}\">{{/if}}<a href=\"{{registration_url}}\">go</a></p>",
    );
    assert!(w.service.review(&known).await.unwrap().problems.is_empty());
    let unknown = base.with_bodies(
        "{{registration_url}}",
        "<img src=\"{{community.logo}}\"><a href=\"{{registration_url}}\">x</a>",
    );
    assert_eq!(
        w.service.review(&unknown).await.unwrap().problems,
        [Problem::UnknownField {
            part: TemplatePart::Html,
            field: "community.logo".into()
        }]
    );
}

#[test]
fn the_default_text_and_html_templates_use_the_same_merge_fields() {
    let fields = |source: &str| -> BTreeSet<String> {
        source
            .split("{{")
            .skip(1)
            .filter_map(|s| s.split("}}").next())
            .map(|s| s.trim_start_matches(['#', '/']).trim().to_owned())
            .filter(|s| !s.is_empty() && s != "else" && s != "if")
            .map(|s| s.trim_start_matches("if ").to_owned())
            .collect()
    };
    let mut html = fields(DEFAULT_HTML);
    html.remove("community.logo_url");
    html.remove("community.accent_color");
    assert_eq!(fields(DEFAULT_TEXT), html);
}

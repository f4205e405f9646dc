//! Compile-time checks and rendering of invitation templates (DESIGN rule 7).

use owner_access::invite::{Problem, TemplatePart};
use owner_access::template::{
    CompiledTemplate, DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT, MERGE_FIELDS, MergeFields,
    text_to_html,
};

fn fields() -> MergeFields {
    MergeFields {
        first_name: "Ana".into(),
        last_name: "Lópes".into(),
        full_name: "Ana Lópes".into(),
        property_address: "12 Elm Street, Unit 4".into(),
        community_name: "Maple Court HOA".into(),
        registration_url: "https://portal.example.org/register?token=abc123".into(),
        expires_on: "2026-12-10".into(),
        portal_url: "https://portal.example.org/".into(),
        reply_to: "board@maple.example.org".into(),
        logo_url: String::new(),
        accent_color: "#1a5fb4".into(),
    }
}

fn problems(subject: &str, text: &str, html: Option<&str>) -> Vec<Problem> {
    CompiledTemplate::compile(subject, text, html).expect_err("should be refused")
}

#[test]
fn defaults_compile_and_render_every_field() {
    let t = CompiledTemplate::compile(DEFAULT_SUBJECT, DEFAULT_TEXT, Some(DEFAULT_HTML))
        .expect("default templates compile");
    let f = fields();
    let r = t.render(&f).unwrap();
    assert_eq!(
        r.subject,
        "Your invitation to the Maple Court HOA owner portal"
    );
    for value in [
        &f.first_name,
        &f.property_address,
        &f.community_name,
        &f.registration_url,
        &f.expires_on,
        &f.portal_url,
    ] {
        assert!(r.text.contains(value.as_str()), "text lacks {value}");
    }
    assert!(
        r.text
            .starts_with("Maple Court HOA: your invitation to the owner portal\n\nDear Ana,\n"),
        "{}",
        r.text
    );
    // HTML: a complete document, the link as an escaped href.
    assert!(r.html.starts_with("<!DOCTYPE html>"));
    assert!(r.html.trim_end().ends_with("</html>"));
    assert!(
        r.html
            .contains("<a href=\"https://portal.example.org/register?token&#x3D;abc123\" "),
        "{}",
        r.html
    );
    assert!(r.html.contains("2026-12-10"));
    // Without a first name the greeting uses the full name.
    let no_first = MergeFields {
        first_name: String::new(),
        ..fields()
    };
    assert!(
        t.render(&no_first)
            .unwrap()
            .text
            .contains("\nDear Ana Lópes,\n")
    );
    // The default text alone (HTML made from it) also compiles.
    CompiledTemplate::compile(DEFAULT_SUBJECT, DEFAULT_TEXT, None).unwrap();
}

#[test]
fn every_merge_field_is_accepted() {
    let all: String = MERGE_FIELDS
        .iter()
        .map(|f| format!("{{{{{f}}}}} "))
        .collect();
    CompiledTemplate::compile(&all, &all, Some(&all)).unwrap();
}

#[test]
fn unknown_fields_are_named_in_every_part_and_branch() {
    let p = problems(
        "Hi {{foo}}",
        "{{#if owner.first_name}}x{{else}}{{owner.middle_name}}{{/if}} {{registration_url}}",
        Some(
            "{{#unless portal_url}}{{#if (eq community.name owner.nickname)}}y{{/if}}{{/unless}}{{registration_url}}",
        ),
    );
    assert_eq!(
        p,
        vec![
            Problem::UnknownField {
                part: TemplatePart::Subject,
                field: "foo".into()
            },
            Problem::UnknownField {
                part: TemplatePart::Text,
                field: "owner.middle_name".into()
            },
            Problem::UnknownField {
                part: TemplatePart::Html,
                field: "owner.nickname".into()
            },
        ]
    );
}

#[test]
fn unknown_field_in_a_condition_and_other_spellings_are_refused() {
    let p = problems("{{#if foo}}a{{/if}}", "{{registration_url}}", None);
    assert_eq!(
        p,
        vec![Problem::UnknownField {
            part: TemplatePart::Subject,
            field: "foo".into()
        }]
    );
    for name in [
        "this",
        "owner",
        "../portal_url",
        "@root.portal_url",
        "owner/first_name",
    ] {
        let p = problems(&format!("{{{{{name}}}}}"), "{{registration_url}}", None);
        assert!(
            matches!(
                &p[..],
                [Problem::UnknownField {
                    part: TemplatePart::Subject,
                    ..
                }]
            ),
            "{name}: {p:?}"
        );
    }
}

#[test]
fn syntax_errors_partials_decorators_and_unknown_helpers_are_refused() {
    let p = problems("{{#if x}", "{{registration_url}}", None);
    assert!(
        matches!(
            &p[..],
            [Problem::TemplateSyntax {
                part: TemplatePart::Subject,
                ..
            }]
        ),
        "{p:?}"
    );
    let p = problems("Hi", "{{> footer}} {{registration_url}}", None);
    assert!(
        matches!(&p[..], [Problem::TemplateSyntax { part: TemplatePart::Text, message }] if message.contains("partial")),
        "{p:?}"
    );
    let p = problems(
        "Hi",
        "{{#*inline \"x\"}}y{{/inline}}{{registration_url}}",
        None,
    );
    assert!(
        matches!(
            &p[..],
            [Problem::TemplateSyntax {
                part: TemplatePart::Text,
                ..
            }]
        ),
        "{p:?}"
    );
    let p = problems("{{shout owner.first_name}}", "{{registration_url}}", None);
    assert_eq!(
        p,
        vec![Problem::UnknownField {
            part: TemplatePart::Subject,
            field: "shout".into()
        }]
    );
    // Context-changing block helpers would make names mean something else.
    let p = problems(
        "Hi",
        "{{#each portal_url}}x{{/each}}{{registration_url}}",
        None,
    );
    assert!(
        matches!(&p[..], [Problem::TemplateSyntax { part: TemplatePart::Text, message }] if message.contains("#each")),
        "{p:?}"
    );
}

#[test]
fn built_in_conditions_are_fine() {
    CompiledTemplate::compile(
        "{{#if (and owner.first_name (not owner.last_name))}}Hi{{else if portal_url}}Yo{{/if}}",
        "{{#unless (ne expires_on \"\")}}no expiry{{/unless}} {{registration_url}} {{! a note }}",
        None,
    )
    .unwrap();
}

#[test]
fn bodies_must_always_carry_the_registration_link() {
    let p = problems("Hi", "no link", Some("<p>none</p>"));
    assert_eq!(
        p,
        vec![
            Problem::MissingRegistrationLink {
                part: TemplatePart::Text
            },
            Problem::MissingRegistrationLink {
                part: TemplatePart::Html
            },
        ]
    );
    // A link only inside a condition may not render: refused.
    let p = problems(
        "Hi",
        "{{#if owner.first_name}}{{registration_url}}{{/if}}",
        None,
    );
    assert_eq!(
        p,
        vec![Problem::MissingRegistrationLink {
            part: TemplatePart::Text
        }]
    );
    // Without an HTML template only the text is checked; the subject never needs it.
    CompiledTemplate::compile("Hi", "{{registration_url}}", None).unwrap();
}

#[test]
fn a_line_break_in_the_subject_template_is_refused() {
    let p = problems("Hi\r\nBcc: evil@example.org", "{{registration_url}}", None);
    assert_eq!(
        p,
        vec![Problem::LineBreakInHeader {
            field: "Subject".into()
        }]
    );
}

#[test]
fn all_problems_of_all_parts_are_collected() {
    let p = problems("{{a}}\n{{b}}", "{{c}", Some("{{{registration_url}}} {{d}}"));
    assert_eq!(p.len(), 6, "{p:?}");
    assert_eq!(
        p[0],
        Problem::LineBreakInHeader {
            field: "Subject".into()
        }
    );
    assert!(p.contains(&Problem::UnknownField {
        part: TemplatePart::Subject,
        field: "a".into()
    }));
    assert!(p.contains(&Problem::UnknownField {
        part: TemplatePart::Subject,
        field: "b".into()
    }));
    assert!(p.iter().any(|x| matches!(
        x,
        Problem::TemplateSyntax {
            part: TemplatePart::Text,
            ..
        }
    )));
    // Triple braces in HTML would skip escaping.
    assert!(p.iter().any(|x| matches!(x, Problem::TemplateSyntax { part: TemplatePart::Html, message } if message.contains("escaping"))));
    assert!(p.contains(&Problem::UnknownField {
        part: TemplatePart::Html,
        field: "d".into()
    }));
}

#[test]
fn html_is_escaped_but_subject_and_text_are_not() {
    let t = CompiledTemplate::compile(
        "Welcome {{owner.full_name}}",
        "Dear {{owner.full_name}}, {{registration_url}}",
        Some("<p>Dear {{owner.full_name}}</p><a href=\"{{registration_url}}\">go</a>"),
    )
    .unwrap();
    let f = MergeFields {
        full_name: "Tom & \"Jerry\" <script>".into(),
        ..fields()
    };
    let r = t.render(&f).unwrap();
    assert_eq!(r.subject, "Welcome Tom & \"Jerry\" <script>");
    assert!(
        r.text
            .starts_with("Dear Tom & \"Jerry\" <script>, https://")
    );
    assert!(
        r.html
            .contains("Dear Tom &amp; &quot;Jerry&quot; &lt;script&gt;"),
        "{}",
        r.html
    );
    assert!(!r.html.contains("<script>"));
}

#[test]
fn rendered_subject_is_one_line() {
    let t = CompiledTemplate::compile("Hi {{owner.first_name}}!", "{{registration_url}}", None)
        .unwrap();
    let f = MergeFields {
        first_name: "A\r\nBcc: x@y.org\t\u{0}\u{2028}z".into(),
        ..fields()
    };
    assert_eq!(t.render(&f).unwrap().subject, "Hi A  Bcc: x@y.org   z!");
}

#[test]
fn html_is_made_from_text_when_none_is_given() {
    let t = CompiledTemplate::compile(
        "Hi",
        "Hello {{owner.first_name}},\n\nRegister: {{registration_url}}.\nThanks\n\n\nBye",
        None,
    )
    .unwrap();
    let f = MergeFields {
        first_name: "<b>Ann</b> & co".into(),
        registration_url: "https://x.org/r?t=1&u=\"2\"".into(),
        ..fields()
    };
    let r = t.render(&f).unwrap();
    assert_eq!(r.html, text_to_html(&r.text));
    // A quote cannot be part of a URL: the link ends there and the rest is escaped.
    assert!(
        r.html
            .contains("<p>Hello &lt;b&gt;Ann&lt;/b&gt; &amp; co,</p>"),
        "{}",
        r.html
    );
    assert!(
        r.html.contains(
            "<p>Register: <a href=\"https://x.org/r?t=1&amp;u=\">https://x.org/r?t=1&amp;u=</a>&quot;2&quot;.<br>\nThanks</p>\n<p>Bye</p>"
        ),
        "{}",
        r.html
    );
    assert!(r.html.starts_with("<!DOCTYPE html>"));
}

#[test]
fn rendering_refuses_an_empty_link() {
    let t = CompiledTemplate::compile("Hi", "{{registration_url}}", None).unwrap();
    let f = MergeFields {
        registration_url: String::new(),
        ..fields()
    };
    assert_eq!(
        t.render(&f),
        Err(Problem::MissingRegistrationLink {
            part: TemplatePart::Text
        })
    );
}

#[test]
fn one_compiled_template_serves_many_threads() {
    let t = std::sync::Arc::new(
        CompiledTemplate::compile(DEFAULT_SUBJECT, DEFAULT_TEXT, Some(DEFAULT_HTML)).unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                let f = MergeFields {
                    first_name: format!("Owner{i}"),
                    ..fields()
                };
                t.render(&f).unwrap().text
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert!(h.join().unwrap().contains(&format!("\nDear Owner{i},\n")));
    }
}

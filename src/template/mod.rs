//! Merge fields, compile-and-check, rendering.
//!
//! An invite's subject and bodies are handlebars templates. They are compiled and
//! checked once per batch by [`CompiledTemplate::compile`], which reports *every*
//! problem it finds (unknown fields, syntax errors, a body without the registration
//! link, a line break in the subject) so a manager can fix them all in one go. Once
//! compiled, [`CompiledTemplate::render`] fills in one owner's [`MergeFields`]; it is
//! cheap and can be called from many send workers at once.
//!
//! # Why the checks are done by walking the template
//!
//! A strict test render only sees the branch of an `{{#if}}` that the sample values
//! select, so a misspelt field in the other branch would reach an owner as a render
//! error (or, without strict mode, as a blank). Walking the parsed template instead
//! visits every branch, every helper parameter and every sub-expression.
//!
//! # What a template may use
//!
//! - the merge fields of [`MERGE_FIELDS`], spelt exactly as listed;
//! - the block helpers `{{#if}}` and `{{#unless}}` (with `{{else}}`);
//! - inside their conditions, the helpers `eq`, `ne`, `and`, `or`, `not`;
//! - comments and string, number and boolean literals.
//!
//! Everything else is refused at compile time: other names
//! ([`Problem::UnknownField`]), partials, decorators and context-changing helpers
//! such as `{{#each}}` or `{{#with}}` ([`Problem::TemplateSyntax`]), and in the HTML
//! body the triple-stash `{{{field}}}`, which would insert a value unescaped.

use std::fmt;

use handlebars::Handlebars;
use handlebars::template::{Parameter, Template, TemplateElement};
use serde::Serialize;

use crate::invite::{Problem, TemplatePart};

mod direct;
mod fields;
mod html_text;
use direct::DirectTemplate;
pub use fields::MergeFields;
pub use html_text::html_to_text_template;

/// The merge fields a template may use, exactly these names.
pub const MERGE_FIELDS: [&str; 11] = [
    "owner.first_name",
    "owner.last_name",
    "owner.full_name",
    "property.address",
    "community.name",
    "registration_url",
    "expires_on",
    "portal_url",
    "reply_to",
    "community.logo_url",
    "community.accent_color",
];

/// The merge field that carries the owner's personal link; every body must output it.
pub const REGISTRATION_FIELD: &str = "registration_url";

/// Block helpers a template may use. They do not change the context, so every name
/// inside them still means a merge field.
const BLOCK_HELPERS: [&str; 2] = ["if", "unless"];

/// Helpers a template may call with parameters (in a condition or on their own).
const INLINE_HELPERS: [&str; 5] = ["eq", "ne", "and", "or", "not"];

/// The default subject: the community and what the message is for.
pub const DEFAULT_SUBJECT: &str = "Your invitation to the {{community.name}} owner portal";

/// The default plain-text body: the same letter as [`DEFAULT_HTML`], word for word
/// where it can be (spam filters score alternatives that differ): greeting, the
/// community and the property, the personal link with its expiry, the portal for
/// later visits, whom to ask, and a line for an owner who did not expect it.
pub const DEFAULT_TEXT: &str = "\
{{community.name}}: your invitation to the owner portal

{{#if owner.first_name}}Dear {{owner.first_name}},{{else}}Dear {{owner.full_name}},{{/if}}

{{community.name}} invites you to register for its online owner portal, where you can \
see your account, community news and documents for {{property.address}}.

Register for the owner portal with your personal link:
{{registration_url}}

The link is for you alone and can be used once. It expires on {{expires_on}}.

Once you are registered, sign in at any time at {{portal_url}}

{{#if reply_to}}Questions? Reply to this email or write to {{reply_to}}.{{else}}Questions? \
Please contact the {{community.name}} management office.{{/if}}

Kind regards,
{{community.name}}

If you did not expect this invitation, you can ignore it: nothing changes unless you \
use the link.
";

/// The default HTML body: a complete small document that reads well from a 375-px
/// phone to a desktop client. One column of at most 600 px in table layout (which
/// every mail client renders), the registration link as a button in the community's
/// accent colour with the plain link below it (wrapping anywhere, so it never makes a
/// phone scroll sideways), the community's logo when it has one. Merge values are
/// HTML-escaped when rendered.
pub const DEFAULT_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="x-apple-disable-message-reformatting">
<title>Your invitation to the {{community.name}} owner portal</title>
</head>
<body style="margin: 0; padding: 0; background-color: #f3f4f6;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="background-color: #f3f4f6;">
<tr><td align="center" style="padding: 24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="max-width: 600px; background-color: #ffffff; border: 1px solid #dfe3e8; border-radius: 8px;">
<tr><td style="padding: 28px 28px 4px 28px; font-family: Arial, Helvetica, sans-serif; color: #1f2328;">
{{#if community.logo_url}}<img src="{{community.logo_url}}" alt="{{community.name}}" height="48" style="display: block; height: 48px; width: auto; max-width: 100%; border: 0; margin: 0 0 16px 0;">{{/if}}
<p style="margin: 0; font-size: 14px; line-height: 1.4; color: #57606a;">{{community.name}}</p>
<h1 style="margin: 6px 0 0 0; font-size: 22px; line-height: 1.3; font-weight: bold; color: #1f2328;">Your invitation to the owner portal</h1>
</td></tr>
<tr><td style="padding: 16px 28px 8px 28px; font-family: Arial, Helvetica, sans-serif; font-size: 16px; line-height: 1.55; color: #1f2328;">
<p style="margin: 0 0 16px 0;">{{#if owner.first_name}}Dear {{owner.first_name}},{{else}}Dear {{owner.full_name}},{{/if}}</p>
<p style="margin: 0 0 16px 0;">{{community.name}} invites you to register for its online owner portal, where you can see your account, community news and documents for {{property.address}}.</p>
<table role="presentation" cellpadding="0" cellspacing="0" border="0" style="margin: 8px 0 20px 0;">
<tr><td bgcolor="{{community.accent_color}}" style="border-radius: 6px; background-color: {{community.accent_color}};">
<a href="{{registration_url}}" style="display: inline-block; padding: 13px 24px; font-family: Arial, Helvetica, sans-serif; font-size: 16px; font-weight: bold; line-height: 1.2; color: #ffffff; text-decoration: none; border-radius: 6px;">Register for the owner portal</a>
</td></tr>
</table>
<p style="margin: 0 0 16px 0; font-size: 14px; color: #57606a;">Or open your personal link in your browser:<br><a href="{{registration_url}}" style="color: {{community.accent_color}}; overflow-wrap: anywhere; word-break: break-word;">{{registration_url}}</a></p>
<p style="margin: 0 0 16px 0;">The link is for you alone and can be used once. It expires on <strong>{{expires_on}}</strong>.</p>
<p style="margin: 0 0 16px 0;">Once you are registered, sign in at any time at <a href="{{portal_url}}" style="color: {{community.accent_color}}; overflow-wrap: anywhere; word-break: break-word;">{{portal_url}}</a></p>
<p style="margin: 0 0 16px 0;">{{#if reply_to}}Questions? Reply to this email or write to <a href="mailto:{{reply_to}}" style="color: {{community.accent_color}};">{{reply_to}}</a>.{{else}}Questions? Please contact the {{community.name}} management office.{{/if}}</p>
<p style="margin: 0 0 8px 0;">Kind regards,<br>{{community.name}}</p>
</td></tr>
<tr><td style="padding: 16px 28px 24px 28px; border-top: 1px solid #dfe3e8; font-family: Arial, Helvetica, sans-serif; font-size: 13px; line-height: 1.5; color: #57606a;">
<p style="margin: 0;">If you did not expect this invitation, you can ignore it: nothing changes unless you use the link.</p>
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"#;

/// One owner's rendered subject and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedParts {
    /// The subject, on one line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// An invite's templates, compiled and checked once per batch.
///
/// `Send + Sync`: one value is shared by all send workers of a batch, each calling
/// [`render`](Self::render) for its owners.
pub struct CompiledTemplate {
    /// Subject and text: no escaping (they are not HTML).
    plain: Handlebars<'static>,
    /// The HTML body, when one was given: handlebars' HTML escaping.
    html: Option<Handlebars<'static>>,
    /// Subject, text and HTML in direct form, where they have the usual shape: they
    /// render without handlebars, to the same text.
    direct: [Option<DirectTemplate>; 3],
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("has_html_template", &self.html.is_some())
            .finish_non_exhaustive()
    }
}

const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "html";

/// The data a template sees, shaped like the merge field names.
#[derive(Serialize)]
struct Data<'a> {
    owner: OwnerData<'a>,
    property: PropertyData<'a>,
    community: CommunityData<'a>,
    registration_url: &'a str,
    expires_on: &'a str,
    portal_url: &'a str,
    reply_to: &'a str,
}

#[derive(Serialize)]
struct OwnerData<'a> {
    first_name: &'a str,
    last_name: &'a str,
    full_name: &'a str,
}

#[derive(Serialize)]
struct PropertyData<'a> {
    address: &'a str,
}

#[derive(Serialize)]
struct CommunityData<'a> {
    name: &'a str,
    logo_url: &'a str,
    accent_color: &'a str,
}

impl<'a> Data<'a> {
    fn new(f: &'a MergeFields) -> Self {
        Self {
            owner: OwnerData {
                first_name: &f.first_name,
                last_name: &f.last_name,
                full_name: &f.full_name,
            },
            property: PropertyData {
                address: &f.property_address,
            },
            community: CommunityData {
                name: &f.community_name,
                logo_url: &f.logo_url,
                accent_color: &f.accent_color,
            },
            registration_url: &f.registration_url,
            expires_on: &f.expires_on,
            portal_url: &f.portal_url,
            reply_to: &f.reply_to,
        }
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    // Strict: a missing value is an error, never a blank. The walk below already
    // guarantees every name exists; this is the second line of defence.
    registry.set_strict_mode(true);
    if !escape {
        registry.register_escape_fn(handlebars::no_escape);
    }
    registry
}

impl CompiledTemplate {
    /// Compiles and checks subject, text and HTML templates.
    ///
    /// `html: None` means the HTML part is made from the rendered text (see
    /// [`text_to_html`]). Every problem of every part is returned, not only the
    /// first: [`Problem::LineBreakInHeader`] (CR or LF in the subject),
    /// [`Problem::TemplateSyntax`] (does not parse, or uses a partial, a decorator, a
    /// context-changing helper, or `{{{…}}}` in HTML), [`Problem::UnknownField`] (a
    /// name that is not one of [`MERGE_FIELDS`] or an allowed helper, in any branch),
    /// [`Problem::MissingRegistrationLink`] (a body that does not always output
    /// `{{registration_url}}`).
    pub fn compile(subject: &str, text: &str, html: Option<&str>) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if subject.contains(['\r', '\n']) {
            problems.push(Problem::LineBreakInHeader {
                field: "Subject".into(),
            });
        }
        let subject_tpl = check_part(TemplatePart::Subject, subject, &mut problems);
        let text_tpl = check_part(TemplatePart::Text, text, &mut problems);
        let html_tpl = html.map(|h| check_part(TemplatePart::Html, h, &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        let (Some(subject_tpl), Some(text_tpl)) = (subject_tpl, text_tpl) else {
            unreachable!("a part that failed to parse reported a problem");
        };
        let direct = [
            DirectTemplate::new(&subject_tpl, false),
            DirectTemplate::new(&text_tpl, false),
            html_tpl
                .as_ref()
                .and_then(|t| t.as_ref())
                .and_then(|t| DirectTemplate::new(t, true)),
        ];
        let mut plain = registry(false);
        plain.register_template(SUBJECT, subject_tpl);
        plain.register_template(TEXT, text_tpl);
        let html = match html_tpl {
            Some(Some(tpl)) => {
                let mut reg = registry(true);
                reg.register_template(HTML, tpl);
                Some(reg)
            }
            Some(None) => unreachable!("a part that failed to parse reported a problem"),
            None => None,
        };
        Ok(Self {
            plain,
            html,
            direct,
        })
    }

    /// Compiles an invite's templates the way they are sent: with no text body, the
    /// text template is made from the HTML body ([`html_to_text_template`]), and a
    /// problem found in it is reported against the HTML body, which is what the
    /// manager wrote; with neither body, [`Problem::MissingBody`].
    pub fn for_invite(invite: &crate::invite::Invite) -> Result<Self, Vec<Problem>> {
        match (&invite.text_body, &invite.html_body) {
            (Some(text), html) => Self::compile(&invite.subject, text, html.as_deref()),
            (None, Some(html)) => {
                let text = html_to_text_template(html);
                Self::compile(&invite.subject, &text, Some(html)).map_err(|problems| {
                    let mut out: Vec<Problem> = Vec::with_capacity(problems.len());
                    for problem in problems {
                        let problem = match problem {
                            Problem::MissingRegistrationLink {
                                part: TemplatePart::Text,
                            } => Problem::MissingRegistrationLink {
                                part: TemplatePart::Html,
                            },
                            Problem::TemplateSyntax {
                                part: TemplatePart::Text,
                                message,
                            } => Problem::TemplateSyntax {
                                part: TemplatePart::Html,
                                message,
                            },
                            Problem::UnknownField {
                                part: TemplatePart::Text,
                                field,
                            } => Problem::UnknownField {
                                part: TemplatePart::Html,
                                field,
                            },
                            other => other,
                        };
                        push_unique(&mut out, problem);
                    }
                    out
                })
            }
            (None, None) => Err(vec![Problem::MissingBody]),
        }
    }

    /// Renders one owner's parts.
    ///
    /// The subject comes out on one line: control characters (CR, LF, TAB...) and
    /// Unicode line or paragraph separators in it, whether from the template or from a
    /// merge value, become spaces. Subject and text are not escaped; the HTML body's
    /// merge values are HTML-escaped. Fails with
    /// [`Problem::MissingRegistrationLink`] when `fields.registration_url` is empty
    /// or does not appear in a rendered body, so a message without a working link is
    /// never built.
    pub fn render(&self, fields: &MergeFields) -> Result<RenderedParts, Problem> {
        if fields.registration_url.trim().is_empty() {
            return Err(Problem::MissingRegistrationLink {
                part: TemplatePart::Text,
            });
        }
        // One JSON context for the parts handlebars renders, made when the first of
        // them needs it (its `render` would convert the fields again for each); none
        // at all when every part renders directly.
        let mut data: Option<handlebars::Context> = None;
        let mut part = |registry: &Handlebars<'static>, index: usize, name: &str, which| {
            if let Some(direct) = &self.direct[index] {
                return Ok(direct.render(fields));
            }
            if data.is_none() {
                data = Some(
                    handlebars::Context::wraps(Data::new(fields))
                        .map_err(|e| render_problem(which, e))?,
                );
            }
            let data = data.as_ref().expect("made above");
            registry
                .render_with_context(name, data)
                .map_err(|e| render_problem(which, e))
        };
        let subject = part(&self.plain, 0, SUBJECT, TemplatePart::Subject)?;
        let text = part(&self.plain, 1, TEXT, TemplatePart::Text)?;
        // A body rendered directly writes its top-level `{{registration_url}}` (compile
        // required one) whatever the values: only handlebars' output is searched.
        if self.direct[1].is_none() && !text.contains(&fields.registration_url) {
            return Err(Problem::MissingRegistrationLink {
                part: TemplatePart::Text,
            });
        }
        let html = match &self.html {
            Some(reg) => {
                let html = part(reg, 2, HTML, TemplatePart::Html)?;
                if self.direct[2].is_none()
                    && !html.contains(&handlebars::html_escape(&fields.registration_url))
                {
                    return Err(Problem::MissingRegistrationLink {
                        part: TemplatePart::Html,
                    });
                }
                html
            }
            None => text_to_html(&text),
        };
        Ok(RenderedParts {
            subject: single_line(&subject),
            text,
            html,
        })
    }

    /// Whether an HTML template was given (otherwise the HTML part is made from the
    /// rendered text).
    pub fn has_html_template(&self) -> bool {
        self.html.is_some()
    }
}

fn render_problem(part: TemplatePart, error: handlebars::RenderError) -> Problem {
    Problem::TemplateSyntax {
        part,
        message: error.to_string(),
    }
}

/// A header value on one line: every control character (CR, LF, TAB, NUL, DEL, C1)
/// and U+2028 / U+2029 becomes a space, and the direction marks
/// ([`is_direction_mark`](crate::invite::is_direction_mark)) are removed, so that a
/// subject or display name shows in the order it is written.
pub fn single_line(value: &str) -> String {
    value
        .chars()
        .filter(|c| !crate::invite::is_direction_mark(*c))
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Parses one part and walks it; problems are appended. `None` when it does not parse.
fn check_part(part: TemplatePart, source: &str, problems: &mut Vec<Problem>) -> Option<Template> {
    let template = match Template::compile(source) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::TemplateSyntax {
                part,
                message: e.to_string(),
            });
            return None;
        }
    };
    let mut walker = Walker {
        part,
        problems: Vec::new(),
    };
    walker.template(&template);
    for p in walker.problems {
        push_unique(problems, p);
    }
    if part != TemplatePart::Subject && !outputs_registration_link(&template) {
        problems.push(Problem::MissingRegistrationLink { part });
    }
    Some(template)
}

fn push_unique(problems: &mut Vec<Problem>, problem: Problem) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

/// Whether `{{registration_url}}` is output unconditionally: at the top level, not
/// inside a block that may not render.
fn outputs_registration_link(template: &Template) -> bool {
    template.elements.iter().any(|e| match e {
        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
            h.params.is_empty() && h.hash.is_empty() && h.name.as_name() == Some(REGISTRATION_FIELD)
        }
        _ => false,
    })
}

struct Walker {
    part: TemplatePart,
    problems: Vec<Problem>,
}

impl Walker {
    fn syntax(&mut self, message: String) {
        push_unique(
            &mut self.problems,
            Problem::TemplateSyntax {
                part: self.part,
                message,
            },
        );
    }

    fn unknown(&mut self, field: &str) {
        push_unique(
            &mut self.problems,
            Problem::UnknownField {
                part: self.part,
                field: field.to_owned(),
            },
        );
    }

    fn template(&mut self, template: &Template) {
        for element in &template.elements {
            self.element(element);
        }
    }

    fn element(&mut self, element: &TemplateElement) {
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) => self.expression(&h.name, &h.params, &h.hash),
            TemplateElement::HtmlExpression(h) => {
                if self.part == TemplatePart::Html {
                    let name = h.name.as_name().unwrap_or("…");
                    self.syntax(format!(
                        "`{{{{{{{name}}}}}}}` would insert the value without HTML escaping; \
                         write `{{{{{name}}}}}`"
                    ));
                }
                self.expression(&h.name, &h.params, &h.hash);
            }
            TemplateElement::HelperBlock(h) => {
                match h.name.as_name() {
                    Some(name) if BLOCK_HELPERS.contains(&name) => {}
                    Some(name) => self.syntax(format!(
                        "`{{{{#{name}}}}}` is not allowed: the only block helpers are \
                         `{{{{#if}}}}` and `{{{{#unless}}}}`"
                    )),
                    None => self.syntax("a block must name a helper".into()),
                }
                self.params(&h.params, &h.hash);
                if let Some(t) = &h.template {
                    self.template(t);
                }
                if let Some(t) = &h.inverse {
                    self.template(t);
                }
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                let name = d.name.as_name().unwrap_or("…").to_owned();
                self.syntax(format!(
                    "partials such as `{{{{> {name}}}}}` are not allowed"
                ));
            }
            TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                let name = d.name.as_name().unwrap_or("…").to_owned();
                self.syntax(format!(
                    "decorators such as `{{{{* {name}}}}}` are not allowed"
                ));
            }
            #[allow(unreachable_patterns)]
            _ => self.syntax("this template construct is not supported".into()),
        }
    }

    /// `{{name}}` (a field) or `{{helper params…}}` (an inline helper call).
    fn expression(
        &mut self,
        name: &Parameter,
        params: &[Parameter],
        hash: &std::collections::HashMap<String, Parameter>,
    ) {
        if params.is_empty() && hash.is_empty() {
            match name {
                Parameter::Subexpression(s) => self.element(s.as_element()),
                _ => self.field(name),
            }
            return;
        }
        match name.as_name() {
            Some(helper) if INLINE_HELPERS.contains(&helper) => {}
            Some(helper) if MERGE_FIELDS.contains(&helper) => self.syntax(format!(
                "`{helper}` is a merge field, not a helper: it cannot take parameters"
            )),
            Some(helper) => self.unknown(helper),
            None => self.syntax("an expression must name a field or a helper".into()),
        }
        self.params(params, hash);
    }

    fn params(
        &mut self,
        params: &[Parameter],
        hash: &std::collections::HashMap<String, Parameter>,
    ) {
        for p in params.iter().chain(hash.values()) {
            self.param(p);
        }
    }

    fn param(&mut self, param: &Parameter) {
        match param {
            Parameter::Literal(_) => {}
            Parameter::Subexpression(s) => self.element(s.as_element()),
            other => self.field(other),
        }
    }

    fn field(&mut self, name: &Parameter) {
        match name.as_name() {
            Some(field) if MERGE_FIELDS.contains(&field) => {}
            Some(field) => self.unknown(field),
            None => self.syntax("an expression must name a merge field".into()),
        }
    }
}

/// The HTML part made from a rendered plain-text body, when the invite has no HTML
/// template: a complete small document; the text HTML-escaped; blocks separated by a
/// blank line become `<p>`, single line breaks `<br>`; `http://` and `https://` URLs
/// become links (trailing punctuation such as a final `.` stays outside the link).
pub fn text_to_html(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(normalized.len() * 5 / 4 + 160);
    out.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n</head>\n<body>\n");
    let mut paragraph: Vec<&str> = Vec::new();
    let flush = |paragraph: &mut Vec<&str>, out: &mut String| {
        if paragraph.is_empty() {
            return;
        }
        out.push_str("<p>");
        for (i, line) in paragraph.iter().enumerate() {
            if i > 0 {
                out.push_str("<br>\n");
            }
            linkify_escaped(line, out);
        }
        out.push_str("</p>\n");
        paragraph.clear();
    };
    for line in normalized.split('\n') {
        if line.trim().is_empty() {
            flush(&mut paragraph, &mut out);
        } else {
            paragraph.push(line);
        }
    }
    flush(&mut paragraph, &mut out);
    out.push_str("</body>\n</html>\n");
    out
}

/// Appends `text` HTML-escaped, with its http(s) URLs as links.
fn linkify_escaped(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(start) = find_url_start(rest) {
        escape_html_into(&rest[..start], out);
        let candidate = &rest[start..];
        let mut end = candidate
            .find(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(candidate.len());
        while end > 0 {
            let last = candidate[..end].chars().next_back().unwrap_or(' ');
            if matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '\'') {
                end -= last.len_utf8();
            } else {
                break;
            }
        }
        let url = &candidate[..end];
        let scheme_len = url.find("://").map_or(url.len(), |i| i + 3);
        if url.len() <= scheme_len {
            // Only a scheme: not a link.
            escape_html_into(url, out);
        } else {
            out.push_str("<a href=\"");
            escape_html_into(url, out);
            out.push_str("\">");
            escape_html_into(url, out);
            out.push_str("</a>");
        }
        // `end` >= 7: the scheme ends in `/`, which is never trimmed, so this advances.
        rest = &candidate[end..];
    }
    escape_html_into(rest, out);
}

/// The byte offset of the next `http://` or `https://` that starts a word.
fn find_url_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("http") {
        let at = from + i;
        let tail = &lower[at..];
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        if starts_word && (tail.starts_with("http://") || tail.starts_with("https://")) {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

fn escape_html_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn compiled_template_is_shareable() {
        assert_send_sync::<CompiledTemplate>();
    }

    #[test]
    fn links_stop_before_trailing_punctuation() {
        let html = text_to_html("See https://x.org/a?b=1&c=2. Or http://y.org)");
        assert!(
            html.contains(
                "See <a href=\"https://x.org/a?b=1&amp;c=2\">https://x.org/a?b=1&amp;c=2</a>. Or "
            ),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"http://y.org\">http://y.org</a>)"),
            "{html}"
        );
    }

    #[test]
    fn a_bare_scheme_is_not_a_link() {
        let html = text_to_html("https:// and xhttps://no.org");
        assert!(!html.contains("<a "), "{html}");
        assert!(html.contains("https:// and xhttps://no.org"), "{html}");
    }
}

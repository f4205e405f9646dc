//! Renders the usual template shapes without handlebars' interpreter: text, merge
//! fields, and `{{#if field}}` / `{{#unless field}}` blocks with an optional
//! `{{else}}`. The default invitation and nearly every edited one have this shape.
//!
//! Why: handlebars renders through a JSON context and a general interpreter, which
//! was a fifth of the CPU time of each message in the end-to-end profile. A direct
//! walk over the template handlebars parsed (so whitespace control and standalone
//! lines are already applied) gives the same text for a fraction of that. Anything
//! else, such as helpers with parameters, is still rendered by handlebars; the tests
//! below check that both give the same output for the shapes taken here.

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};

use super::{MERGE_FIELDS, MergeFields};

/// One of the merge fields, resolved once at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    FirstName,
    LastName,
    FullName,
    PropertyAddress,
    CommunityName,
    RegistrationUrl,
    ExpiresOn,
    PortalUrl,
    ReplyTo,
    LogoUrl,
    AccentColor,
}

impl Field {
    /// In the order of [`MERGE_FIELDS`], which holds their names.
    const ALL: [Field; 11] = [
        Self::FirstName,
        Self::LastName,
        Self::FullName,
        Self::PropertyAddress,
        Self::CommunityName,
        Self::RegistrationUrl,
        Self::ExpiresOn,
        Self::PortalUrl,
        Self::ReplyTo,
        Self::LogoUrl,
        Self::AccentColor,
    ];

    fn named(parameter: &Parameter) -> Option<Self> {
        if !matches!(parameter, Parameter::Path(_) | Parameter::Name(_)) {
            return None;
        }
        let name = parameter.as_name()?;
        let at = MERGE_FIELDS.iter().position(|field| *field == name)?;
        Some(Self::ALL[at])
    }

    fn value(self, fields: &MergeFields) -> &str {
        match self {
            Self::FirstName => &fields.first_name,
            Self::LastName => &fields.last_name,
            Self::FullName => &fields.full_name,
            Self::PropertyAddress => &fields.property_address,
            Self::CommunityName => &fields.community_name,
            Self::RegistrationUrl => &fields.registration_url,
            Self::ExpiresOn => &fields.expires_on,
            Self::PortalUrl => &fields.portal_url,
            Self::ReplyTo => &fields.reply_to,
            Self::LogoUrl => &fields.logo_url,
            Self::AccentColor => &fields.accent_color,
        }
    }
}

#[derive(Debug)]
enum Node {
    Text(String),
    Value {
        field: Field,
        escape: bool,
    },
    /// `{{#if field}}then{{else}}otherwise{{/if}}`; `unless` is stored with the
    /// branches swapped. A field is true when it is not empty, as in handlebars.
    Choice {
        field: Field,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// A template part that renders without handlebars.
#[derive(Debug)]
pub(super) struct DirectTemplate {
    nodes: Vec<Node>,
    /// The literal text's length: most of the output, so one allocation fits.
    text_len: usize,
}

impl DirectTemplate {
    /// The direct form of a parsed part, or `None` when it uses anything else.
    /// `escape` is whether `{{field}}` is HTML-escaped (the HTML part).
    pub(super) fn new(template: &Template, escape: bool) -> Option<Self> {
        let nodes = nodes(&template.elements, escape)?;
        let text_len = text_len(&nodes);
        Some(Self { nodes, text_len })
    }

    pub(super) fn render(&self, fields: &MergeFields) -> String {
        let mut out = String::with_capacity(self.text_len + 256);
        write_nodes(&mut out, &self.nodes, fields);
        out
    }
}

fn nodes(elements: &[TemplateElement], escape: bool) -> Option<Vec<Node>> {
    let mut out = Vec::with_capacity(elements.len());
    for element in elements {
        match element {
            TemplateElement::RawString(text) => out.push(Node::Text(text.clone())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) => out.push(Node::Value {
                field: plain_field(h)?,
                escape,
            }),
            TemplateElement::HtmlExpression(h) => out.push(Node::Value {
                field: plain_field(h)?,
                escape: false,
            }),
            TemplateElement::HelperBlock(h) => out.push(choice(h, escape)?),
            _ => return None,
        }
    }
    Some(out)
}

/// `{{field}}`: a merge field with no parameters.
fn plain_field(h: &HelperTemplate) -> Option<Field> {
    if !h.params.is_empty() || !h.hash.is_empty() {
        return None;
    }
    Field::named(&h.name)
}

/// `{{#if field}}` or `{{#unless field}}`, with one field and nothing else.
fn choice(h: &HelperTemplate, escape: bool) -> Option<Node> {
    let negate = match h.name.as_name()? {
        "if" => false,
        "unless" => true,
        _ => return None,
    };
    if h.params.len() != 1 || !h.hash.is_empty() || h.block_param.is_some() {
        return None;
    }
    let field = Field::named(&h.params[0])?;
    let branch = |t: &Option<Template>| match t {
        Some(t) => nodes(&t.elements, escape),
        None => Some(Vec::new()),
    };
    let (mut then, mut otherwise) = (branch(&h.template)?, branch(&h.inverse)?);
    if negate {
        std::mem::swap(&mut then, &mut otherwise);
    }
    Some(Node::Choice {
        field,
        then,
        otherwise,
    })
}

fn text_len(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| match n {
            Node::Text(t) => t.len(),
            Node::Value { .. } => 0,
            Node::Choice {
                then, otherwise, ..
            } => text_len(then).max(text_len(otherwise)),
        })
        .sum()
}

/// Handlebars' HTML escape (the same seven characters, the same entities), written
/// into `out` a run at a time instead of into a new string a character at a time.
fn push_html_escaped(out: &mut String, value: &str) {
    let mut plain = 0;
    for (i, byte) in value.bytes().enumerate() {
        let entity = match byte {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'`' => "&#x60;",
            b'=' => "&#x3D;",
            _ => continue,
        };
        // The escaped characters are ASCII, so `i` is on a character boundary.
        out.push_str(&value[plain..i]);
        out.push_str(entity);
        plain = i + 1;
    }
    out.push_str(&value[plain..]);
}

fn write_nodes(out: &mut String, nodes: &[Node], fields: &MergeFields) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Value { field, escape } => {
                let value = field.value(fields);
                if *escape {
                    push_html_escaped(out, value);
                } else {
                    out.push_str(value);
                }
            }
            Node::Choice {
                field,
                then,
                otherwise,
            } => {
                let branch = if field.value(fields).is_empty() {
                    otherwise
                } else {
                    then
                };
                write_nodes(out, branch, fields);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT, Data, registry};
    use super::*;
    use proptest::prelude::*;

    /// The reference: handlebars itself, configured as the compiled templates are.
    fn by_handlebars(source: &str, escape: bool, fields: &MergeFields) -> String {
        registry(escape)
            .render_template(source, &Data::new(fields))
            .expect("renders")
    }

    fn direct(source: &str, escape: bool) -> Option<DirectTemplate> {
        DirectTemplate::new(&Template::compile(source).expect("parses"), escape)
    }

    fn sample_fields(first_name: &str) -> MergeFields {
        MergeFields {
            first_name: first_name.into(),
            last_name: "O'Brien & <Sons>".into(),
            full_name: format!("{first_name} O'Brien").trim().into(),
            property_address: "12 \"Elm\" Row, =Unit `4`".into(),
            community_name: "Bench Towers".into(),
            registration_url: "https://portal.example/register?token=a&b=c".into(),
            expires_on: "2026-12-10".into(),
            portal_url: "https://portal.example/".into(),
            reply_to: "board@maple.example.org".into(),
            logo_url: String::new(),
            accent_color: "#1a5fb4".into(),
        }
    }

    #[test]
    fn the_default_templates_render_directly_and_as_handlebars_does() {
        for first_name in ["Ann", ""] {
            let fields = sample_fields(first_name);
            for (source, escape) in [
                (DEFAULT_SUBJECT, false),
                (DEFAULT_TEXT, false),
                (DEFAULT_HTML, true),
            ] {
                let template = direct(source, escape).expect("the default is direct");
                assert_eq!(
                    template.render(&fields),
                    by_handlebars(source, escape, &fields)
                );
            }
        }
    }

    #[test]
    fn each_merge_field_name_reads_its_own_value() {
        let fields = MergeFields {
            first_name: "first".into(),
            last_name: "last".into(),
            full_name: "full".into(),
            property_address: "address".into(),
            community_name: "community".into(),
            registration_url: "link".into(),
            expires_on: "expiry".into(),
            portal_url: "portal".into(),
            reply_to: "reply".into(),
            logo_url: "logo".into(),
            accent_color: "accent".into(),
        };
        for name in MERGE_FIELDS {
            let source = format!("{{{{{name}}}}}");
            let template = direct(&source, false).expect("a field is direct");
            assert_eq!(
                template.render(&fields),
                by_handlebars(&source, false, &fields)
            );
        }
    }

    #[test]
    fn other_shapes_are_left_to_handlebars() {
        for source in [
            "{{#if (eq owner.first_name \"Ann\")}}x{{/if}}",
            "{{#if owner.first_name includeZero=true}}x{{/if}}",
            "{{eq owner.first_name owner.last_name}}",
            "{{#each owner}}x{{/each}}",
            "{{> partial}}",
        ] {
            let parsed = Template::compile(source).expect("parses");
            assert!(DirectTemplate::new(&parsed, false).is_none(), "{source}");
        }
    }

    /// Template source made of the shapes the direct renderer takes, with the
    /// whitespace-control and standalone-line cases that handlebars rewrites.
    fn source(depth: u32) -> BoxedStrategy<String> {
        let field = prop::sample::select(MERGE_FIELDS.to_vec());
        let leaf = prop_oneof![
            prop::sample::select(vec![
                "Hello ", "\n", "  ", "a", "<&\"'>", "=`", ".", "\r\n", "\t",
            ])
            .prop_map(str::to_owned),
            field.clone().prop_map(|f| format!("{{{{{f}}}}}")),
            field.clone().prop_map(|f| format!("{{{{~{f}}}}}")),
            field.clone().prop_map(|f| format!("{{{{{f}~}}}}")),
            field.clone().prop_map(|f| format!("{{{{{{{f}}}}}}}")),
            Just("{{! a note }}".to_owned()),
            Just("\n{{!-- a note --}}\n".to_owned()),
        ];
        if depth == 0 {
            return prop::collection::vec(leaf, 0..6)
                .prop_map(|v| v.concat())
                .boxed();
        }
        let block = (
            prop::sample::select(vec!["if", "unless"]),
            field,
            source(depth - 1),
            prop::option::of(source(depth - 1)),
            prop::sample::select(vec!["", "\n"]),
            prop::sample::select(vec!["", "~"]),
        )
            .prop_map(|(helper, field, then, otherwise, nl, tilde)| {
                let otherwise = otherwise
                    .map(|o| format!("{nl}{{{{{tilde}else{tilde}}}}}{nl}{o}"))
                    .unwrap_or_default();
                format!(
                    "{nl}{{{{#{helper} {field}}}}}{nl}{then}{otherwise}{nl}{{{{/{helper}}}}}{nl}"
                )
            });
        prop::collection::vec(prop_oneof![3 => leaf, 1 => block], 0..6)
            .prop_map(|v| v.concat())
            .boxed()
    }

    fn any_fields() -> impl Strategy<Value = MergeFields> {
        let value = || prop::sample::select(vec!["", "Ann", "<b>&amp;\"'", " ", "Zoë", "a=b`"]);
        (value(), value(), value(), value(), value()).prop_map(
            |(first, last, full, address, community)| MergeFields {
                first_name: first.into(),
                last_name: last.into(),
                full_name: full.into(),
                property_address: address.into(),
                community_name: community.into(),
                registration_url: "https://p.example/r?t=x&y=1".into(),
                expires_on: "2026-12-10".into(),
                portal_url: "https://p.example/".into(),
                reply_to: "board@maple.example.org".into(),
                logo_url: String::new(),
                accent_color: "#1a5fb4".into(),
            },
        )
    }

    proptest! {
        #[test]
        fn escapes_exactly_as_handlebars(value in "[<>\"&'`=a é\n]{0,12}|\\PC{0,12}") {
            let mut out = String::from("kept ");
            push_html_escaped(&mut out, &value);
            prop_assert_eq!(out, format!("kept {}", handlebars::html_escape(&value)));
        }

        #[test]
        fn renders_exactly_as_handlebars(
            source in source(2),
            fields in any_fields(),
            escape in any::<bool>(),
        ) {
            let template = direct(&source, escape);
            prop_assert!(template.is_some(), "taken directly: {source:?}");
            prop_assert_eq!(
                template.unwrap().render(&fields),
                by_handlebars(&source, escape, &fields),
                "{:?}", source
            );
        }
    }
}

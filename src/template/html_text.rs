//! The plain-text body made from an HTML body template, when an invite has no text
//! body of its own: the same words and the same links, so the two alternatives of
//! every message say the same thing.
//!
//! # Why the template, not each message, is converted
//!
//! The conversion runs once per batch on the HTML *template*: its merge fields
//! (`{{owner.first_name}}`, `{{registration_url}}`...) and `{{#if}}` blocks are text
//! to an HTML reader, so they come through as they are, and the result is compiled as
//! the text template like any other. Each message then renders its text part as
//! cheaply as a hand-written one, and a link's `href="{{registration_url}}"` becomes
//! `text ({{registration_url}})`: the text part carries the very link the HTML does.
//!
//! # What it does with the HTML
//!
//! - `head`, `style`, `script`, `title`, `template` and comments are dropped; so is
//!   anything inside a tag but the `href` of a link and the `alt` of an image;
//! - block elements (`p`, `div`, `h1`–`h6`, `table`, `tr`, `li`, `blockquote`...)
//!   become paragraphs separated by a blank line, `br` a line break, `li` a line
//!   starting with `- `, `hr` a line of dashes; table cells are separated by a space;
//! - a link becomes `text (URL)`, or just its text when that already is the URL (or
//!   the address of a `mailto:` link); an image becomes its `alt` text;
//! - white space is collapsed as a browser would, and character references are
//!   decoded (numeric ones and the common named ones; an unknown name stays as it is).
//!   A decoded `{{` is written as `\{{`, so text that showed braces in the HTML does
//!   not turn into a merge field.
//!
//! Lines are not wrapped: mail clients wrap plain text to their own width, and a
//! wrapped line would break a long link.

/// The text template made from an HTML template (see the module docs).
pub fn html_to_text_template(html: &str) -> String {
    let mut converter = Converter::default();
    converter.run(html);
    converter.finish()
}

#[derive(Default)]
struct Converter {
    /// Finished lines and paragraph breaks, as text.
    out: String,
    /// The current line, white space already collapsed.
    line: String,
    /// A space is due before the next word on this line.
    pending_space: bool,
    /// Blank lines due before the next text: 0 none, 1 a line break, 2 a paragraph.
    pending_break: u8,
    /// Elements whose content is dropped, by depth.
    skip: Vec<String>,
    /// Open links: their href and the text written inside them so far.
    links: Vec<OpenLink>,
}

struct OpenLink {
    href: Option<String>,
    /// The text written inside the link so far.
    text: String,
}

/// Elements whose content is not text a reader sees.
const SKIPPED: [&str; 6] = ["head", "style", "script", "title", "template", "noscript"];

/// Elements that start and end a paragraph.
const BLOCKS: [&str; 24] = [
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "tr",
    "ul",
    "ol",
    "li",
    "blockquote",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "address",
    "center",
    "pre",
    "dl",
];

impl Converter {
    fn run(&mut self, html: &str) {
        let mut rest = html;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            if rest.starts_with("{{") {
                // A merge field or block, copied whole (a `}}` inside a string literal
                // of a helper call is not looked for: the template checker refuses
                // what it cannot parse anyway).
                let end = rest.find("}}").map_or(rest.len(), |i| i + 2);
                let end = if rest[end..].starts_with('}') {
                    end + 1
                } else {
                    end
                };
                self.expression(&rest[..end]);
                rest = &rest[end..];
                continue;
            }
            if rest.starts_with('<')
                && rest[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!')
            {
                let end = tag_end(rest);
                self.tag(&rest[1..end.saturating_sub(1).max(1)]);
                rest = &rest[end..];
                continue;
            }
            let first = rest.chars().next().map_or(1, char::len_utf8);
            let next = rest[first..]
                .find(['<', '{'])
                .map_or(rest.len(), |i| i + first);
            self.text(&rest[..next]);
            rest = &rest[next..];
        }
    }

    fn skipping(&self) -> bool {
        !self.skip.is_empty()
    }

    /// A handlebars expression: kept as a word of the text (it renders to one).
    fn expression(&mut self, expression: &str) {
        if self.skipping() {
            return;
        }
        // Block helpers and comments produce no text of their own: they do not
        // start a paragraph or a word on their own, only sit where they are.
        self.word(expression);
    }

    fn text(&mut self, raw: &str) {
        if self.skipping() {
            return;
        }
        let decoded = decode_references(raw);
        for (i, piece) in decoded.split(is_html_space).enumerate() {
            if i > 0 {
                self.pending_space = true;
            }
            if piece.is_empty() {
                continue;
            }
            // Braces that were text in the HTML stay text in the template.
            let safe = piece.replace("{{", "\\{{");
            self.word(&safe);
        }
    }

    /// Appends a run of non-space text to the current line.
    fn word(&mut self, word: &str) {
        self.flush_break();
        if self.pending_space && !self.line.is_empty() && !self.line.ends_with(' ') {
            self.line.push(' ');
            for link in &mut self.links {
                link.text.push(' ');
            }
        }
        self.pending_space = false;
        self.line.push_str(word);
        for link in &mut self.links {
            link.text.push_str(word);
        }
    }

    fn flush_break(&mut self) {
        if self.pending_break == 0 {
            return;
        }
        if !self.out.is_empty() || !self.line.is_empty() {
            self.end_line();
            if self.pending_break >= 2 && !self.out.is_empty() {
                self.out.push('\n');
            }
        }
        self.pending_break = 0;
        self.pending_space = false;
    }

    fn end_line(&mut self) {
        let line = self.line.trim_end();
        if !line.is_empty() {
            self.out.push_str(line);
            self.out.push('\n');
        }
        self.line.clear();
    }

    fn paragraph(&mut self) {
        if !self.line.is_empty() || !self.out.is_empty() {
            self.pending_break = 2;
        }
    }

    fn line_break(&mut self) {
        if !self.line.is_empty() || !self.out.is_empty() {
            self.pending_break = self.pending_break.max(1);
        }
    }

    fn tag(&mut self, inner: &str) {
        if inner.starts_with('!') || inner.starts_with('?') {
            return; // <!DOCTYPE ...>
        }
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let name_end = inner
            .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .unwrap_or(inner.len());
        let name = inner[..name_end].to_ascii_lowercase();
        let attributes = &inner[name_end..];
        if SKIPPED.contains(&name.as_str()) {
            if closing {
                if let Some(at) = self.skip.iter().rposition(|s| *s == name) {
                    self.skip.truncate(at);
                }
            } else if !attributes.trim_end().ends_with('/') {
                self.skip.push(name);
            }
            return;
        }
        if self.skipping() {
            return;
        }
        match (name.as_str(), closing) {
            ("br", _) => {
                self.line_break();
                self.flush_break();
                // A `<br>` ends the line even when nothing follows on it.
                self.pending_break = 1;
            }
            ("hr", _) => {
                self.paragraph();
                self.word("----------");
                self.paragraph();
            }
            ("li", false) => {
                self.line_break();
                self.word("-");
                self.pending_space = true;
            }
            ("li", true) => self.line_break(),
            ("td" | "th", _) => self.pending_space = true,
            ("img", _) => {
                if let Some(alt) = attribute(attributes, "alt").filter(|a| !a.trim().is_empty()) {
                    self.pending_space = true;
                    self.text(&alt);
                    self.pending_space = true;
                }
            }
            ("a", false) => {
                let href = attribute(attributes, "href")
                    .map(|h| decode_references(h.trim()))
                    .filter(|h| !h.is_empty() && !h.starts_with('#'));
                self.links.push(OpenLink {
                    href,
                    text: String::new(),
                });
            }
            ("a", true) => {
                if let Some(link) = self.links.pop()
                    && let Some(href) = link.href
                {
                    let text = link.text.trim();
                    let shown = href.strip_prefix("mailto:").unwrap_or(&href);
                    if text.is_empty() {
                        self.word(&href);
                    } else if text != shown && text != href {
                        self.pending_space = true;
                        self.word(&format!("({href})"));
                    }
                }
            }
            (block, _) if BLOCKS.contains(&block) => self.paragraph(),
            _ => {}
        }
    }

    fn finish(mut self) -> String {
        self.end_line();
        // One line break at the end, as a text file has.
        let mut out = self.out;
        while out.ends_with("\n\n") {
            out.pop();
        }
        out
    }
}

fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}

/// Where a tag that starts `html` ends (after its `>`), quoted attribute values (which
/// may hold a `>`) skipped.
fn tag_end(html: &str) -> usize {
    let mut quote: Option<char> = None;
    for (i, c) in html.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    html.len()
}

/// The value of an attribute in a tag's attribute text, as written (quotes removed).
fn attribute(attributes: &str, wanted: &str) -> Option<String> {
    let mut rest = attributes;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let mut value = None;
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, remaining) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(q).unwrap_or(body.len());
                    (&body[..end], body.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            value = Some(v);
            rest = remaining;
        }
        if name.eq_ignore_ascii_case(wanted) {
            return Some(value.unwrap_or("").to_owned());
        }
        if name.is_empty() && value.is_none() {
            // Nothing recognisable is left.
            return None;
        }
    }
}

/// Decodes character references: `&#NN;`, `&#xHH;` and the common named ones. An
/// unknown or malformed one is kept as it is; `&nbsp;` becomes a no-break space.
fn decode_references(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let candidate = &rest[at + 1..];
        let end = candidate
            .char_indices()
            .take(32)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| {
            let name = &candidate[..end];
            let c = if let Some(num) = name.strip_prefix('#') {
                let value = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse::<u32>().ok(),
                };
                value.and_then(char::from_u32).filter(|c| *c != '\0')
            } else {
                named_reference(name)
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &candidate[end + 1..];
            }
            None => {
                out.push('&');
                rest = candidate;
            }
        }
    }
    out.push_str(rest);
    out
}

fn named_reference(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "deg" => '°',
        "times" => '×',
        "shy" => '\u{ad}',
        "zwnj" => '\u{200c}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_links_and_merge_fields_come_through() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>
<body><p>Dear {{owner.first_name}},</p>
<p>Please <a href="{{registration_url}}">register here</a>.<br>Thanks&nbsp;&amp; regards</p>
<p><a href="{{portal_url}}">{{portal_url}}</a> or <a href="mailto:{{reply_to}}">{{reply_to}}</a></p>
<ul><li>one</li><li>two &#x2014; &#8212; &bogus;</li></ul>
<!-- a comment --><script>alert(1)</script><p>&#123;&#123;literal}} é<b>x</b></p></body></html>"#;
        let text = html_to_text_template(html);
        assert_eq!(
            text,
            "Dear {{owner.first_name}},\n\n\
             Please register here ({{registration_url}}).\n\
             Thanks\u{a0}& regards\n\n\
             {{portal_url}} or {{reply_to}}\n\n\
             - one\n\
             - two — — &bogus;\n\n\
             \\{{literal}} éx\n"
        );
    }

    #[test]
    fn attributes_are_read_whatever_their_quoting() {
        assert_eq!(
            attribute(r#" class=x href='a>b' alt="z""#, "href").as_deref(),
            Some("a>b")
        );
        assert_eq!(
            attribute(" href=plain alt", "href").as_deref(),
            Some("plain")
        );
        assert_eq!(attribute(" alt", "alt").as_deref(), Some(""));
        assert_eq!(attribute(" title=\"t\"", "href"), None);
        assert_eq!(tag_end(r#"<a href="x>y">text"#), 14);
    }
}

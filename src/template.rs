//! Merge fields, compile-and-check, rendering. (Being written: see the interface.)

use crate::invite::Problem;

/// The merge fields a template may use, exactly these names.
pub const MERGE_FIELDS: [&str; 8] = [
    "owner.first_name",
    "owner.last_name",
    "owner.full_name",
    "property.address",
    "community.name",
    "registration_url",
    "expires_on",
    "portal_url",
];

/// The values of the merge fields for one owner's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeFields {
    /// `owner.first_name`
    pub first_name: String,
    /// `owner.last_name`
    pub last_name: String,
    /// `owner.full_name`
    pub full_name: String,
    /// `property.address`
    pub property_address: String,
    /// `community.name`
    pub community_name: String,
    /// `registration_url`: the owner's personal link.
    pub registration_url: String,
    /// `expires_on`: the link's expiry date, `YYYY-MM-DD`.
    pub expires_on: String,
    /// `portal_url`: the portal's URL without a token.
    pub portal_url: String,
}

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
#[derive(Debug)]
pub struct CompiledTemplate {
    _private: (),
}

impl CompiledTemplate {
    /// Compiles and checks subject, text and HTML templates.
    pub fn compile(_subject: &str, _text: &str, _html: Option<&str>) -> Result<Self, Vec<Problem>> {
        todo!("template compilation")
    }

    /// Renders one owner's parts.
    pub fn render(&self, _fields: &MergeFields) -> Result<RenderedParts, Problem> {
        todo!("template rendering")
    }
}

/// The default subject.
pub const DEFAULT_SUBJECT: &str = "";
/// The default text body.
pub const DEFAULT_TEXT: &str = "";
/// The default HTML body.
pub const DEFAULT_HTML: &str = "";

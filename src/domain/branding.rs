//! What a host may set per community for its letters: the time zone their dates are
//! shown in, and the branding of the default letter (a logo and an accent colour).
//!
//! Both are checked when they are made, so a value that reaches a template is always
//! safe where the default letter puts it: a colour in a `style` attribute, a logo URL
//! in an `src`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A community's time zone, an IANA name such as `Europe/Athens`, checked against
/// the time-zone database built into the crate (jiff's bundled copy of the IANA
/// database, so it works the same on a machine without `/usr/share/zoneinfo`).
#[derive(Clone)]
pub struct TimeZoneName {
    name: String,
    zone: jiff::tz::TimeZone,
}

/// A time-zone name the database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a time zone of the IANA database (for example `Europe/Athens`)")]
pub struct InvalidTimeZone {
    /// As given.
    pub name: String,
}

impl TimeZoneName {
    /// The zone of an IANA name (`Europe/Athens`, `America/New_York`, `UTC`).
    pub fn new(name: &str) -> Result<Self, InvalidTimeZone> {
        let name = name.trim();
        let zone = jiff::tz::db().get(name).map_err(|_| InvalidTimeZone {
            name: name.to_owned(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            zone,
        })
    }

    /// The name as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// `at` as a person reads it in this zone: `15 December 2026 at 14:30 EET`.
    pub fn format(&self, at: Timestamp) -> String {
        format_in(&self.zone, at)
    }
}

/// `at` in UTC, as [`TimeZoneName::format`] writes it: `15 December 2026 at 14:30 UTC`.
pub fn format_utc(at: Timestamp) -> String {
    format_in(&jiff::tz::TimeZone::UTC, at)
}

fn format_in(zone: &jiff::tz::TimeZone, at: Timestamp) -> String {
    let nanos = at.as_offset_date_time().unix_timestamp_nanos();
    let Ok(instant) = jiff::Timestamp::from_nanosecond(nanos) else {
        return at.date_string();
    };
    let zoned = instant.to_zoned_datetime(zone.clone());
    let date = zoned.strftime("%-d %B %Y at %H:%M").to_string();
    let abbreviation = zoned.strftime("%Z").to_string();
    // Zones without a lettered abbreviation have their offset as one (`+04`).
    if abbreviation.starts_with(['+', '-']) {
        format!("{date} UTC{abbreviation}")
    } else {
        format!("{date} {abbreviation}")
    }
}

impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZoneName {}

impl fmt::Debug for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimeZoneName").field(&self.name).finish()
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::str::FromStr for TimeZoneName {
    type Err = InvalidTimeZone;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for TimeZoneName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::new(&name).map_err(serde::de::Error::custom)
    }
}

/// The accent colour of the default letter when a community has none (a blue with
/// 6:1 contrast to white).
pub const DEFAULT_ACCENT_COLOR: &str = "#1a5fb4";

/// A community's branding, filled into the merge fields `community.logo_url` and
/// `community.accent_color`. Every part is optional; each is checked when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BrandingFields", into = "BrandingFields")]
pub struct Branding {
    logo_url: Option<String>,
    accent_color: Option<String>,
}

/// [`Branding`] as stored: checked again when read.
#[derive(Serialize, Deserialize)]
struct BrandingFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accent_color: Option<String>,
}

impl TryFrom<BrandingFields> for Branding {
    type Error = InvalidBranding;
    fn try_from(f: BrandingFields) -> Result<Self, Self::Error> {
        let mut b = Branding::default();
        if let Some(url) = f.logo_url {
            b = b.with_logo_url(&url)?;
        }
        if let Some(color) = f.accent_color {
            b = b.with_accent_color(&color)?;
        }
        Ok(b)
    }
}

impl From<Branding> for BrandingFields {
    fn from(b: Branding) -> Self {
        Self {
            logo_url: b.logo_url,
            accent_color: b.accent_color,
        }
    }
}

/// Why a branding value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidBranding {
    /// The logo URL is not an `https://` (or `http://`) URL of at most 2,000
    /// characters without spaces, quotes or angle brackets.
    #[error("the logo URL `{url}` must be an http(s) URL without spaces, quotes or < >")]
    LogoUrl {
        /// As given.
        url: String,
    },
    /// The accent colour is not `#rgb` or `#rrggbb`.
    #[error("the accent colour `{color}` must be written #rgb or #rrggbb")]
    AccentColor {
        /// As given.
        color: String,
    },
    /// The accent colour is too light for the white text of the button (WCAG asks
    /// for a contrast of at least 4.5:1).
    #[error(
        "the accent colour `{color}` is too light for white text (contrast {contrast:.1}:1, at least 4.5:1 needed)"
    )]
    AccentTooLight {
        /// As given.
        color: String,
        /// Its contrast with white.
        contrast: f64,
    },
}

impl Branding {
    /// No branding: no logo, the default accent colour.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the logo shown at the top of the default letter (an image URL the mail
    /// client fetches: many show it only once the reader allows remote images).
    pub fn with_logo_url(mut self, url: &str) -> Result<Self, InvalidBranding> {
        let url = url.trim();
        let scheme = url.starts_with("https://") || url.starts_with("http://");
        let bad = |c: char| c.is_whitespace() || c.is_control() || "\"'<>`\\".contains(c);
        if !scheme || url.len() > 2000 || url.chars().any(bad) || url.ends_with("//") {
            return Err(InvalidBranding::LogoUrl {
                url: url.to_owned(),
            });
        }
        self.logo_url = Some(url.to_owned());
        Ok(self)
    }

    /// Sets the colour of the button and the links (`#rgb` or `#rrggbb`; stored as
    /// `#rrggbb` in lower case). It must be dark enough for white text.
    pub fn with_accent_color(mut self, color: &str) -> Result<Self, InvalidBranding> {
        let raw = color.trim();
        let bad = || InvalidBranding::AccentColor {
            color: raw.to_owned(),
        };
        let hex = raw.strip_prefix('#').ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let full: String = match hex.len() {
            3 => hex.chars().flat_map(|c| [c, c]).collect(),
            6 => hex.to_owned(),
            _ => return Err(bad()),
        };
        let full = full.to_ascii_lowercase();
        let contrast = contrast_with_white(&full);
        if contrast < 4.5 {
            return Err(InvalidBranding::AccentTooLight {
                color: raw.to_owned(),
                contrast,
            });
        }
        self.accent_color = Some(format!("#{full}"));
        Ok(self)
    }

    /// The logo URL, if one is set.
    pub fn logo_url(&self) -> Option<&str> {
        self.logo_url.as_deref()
    }

    /// The accent colour (`#rrggbb`), if one is set.
    pub fn accent_color(&self) -> Option<&str> {
        self.accent_color.as_deref()
    }

    /// The accent colour the letter uses: the community's, or
    /// [`DEFAULT_ACCENT_COLOR`].
    pub fn accent_color_or_default(&self) -> &str {
        self.accent_color().unwrap_or(DEFAULT_ACCENT_COLOR)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.logo_url.is_none() && self.accent_color.is_none()
    }
}

/// WCAG 2 contrast ratio of an `rrggbb` colour with white.
fn contrast_with_white(rrggbb: &str) -> f64 {
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(&rrggbb[i..i + 2], 16).unwrap_or(0)) / 255.0;
        if v <= 0.039_28 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4);
    1.05 / (luminance + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_a_person_writes_them_with_their_zone() {
        // 2026-12-15 14:30:00 UTC
        let at = Timestamp::from_unix_seconds(1_797_345_000);
        assert_eq!(format_utc(at), "15 December 2026 at 14:30 UTC");
        let athens = TimeZoneName::new("Europe/Athens").unwrap();
        assert_eq!(athens.format(at), "15 December 2026 at 16:30 EET");
        let new_york = TimeZoneName::new(" America/New_York ").unwrap();
        assert_eq!(new_york.as_str(), "America/New_York");
        assert_eq!(new_york.format(at), "15 December 2026 at 09:30 EST");
        let dubai = TimeZoneName::new("Asia/Dubai").unwrap();
        assert_eq!(dubai.format(at), "15 December 2026 at 18:30 UTC+04");
        // A day shorter than 10 is written without a leading zero.
        let early = Timestamp::from_unix_seconds(1_796_515_200);
        assert_eq!(format_utc(early), "6 December 2026 at 00:00 UTC");
    }

    #[test]
    fn unknown_zones_are_refused_and_names_round_trip() {
        assert!(TimeZoneName::new("Mars/Olympus_Mons").is_err());
        assert!(TimeZoneName::new("").is_err());
        let zone: TimeZoneName = serde_json::from_str("\"Europe/Warsaw\"").unwrap();
        assert_eq!(serde_json::to_string(&zone).unwrap(), "\"Europe/Warsaw\"");
        assert!(serde_json::from_str::<TimeZoneName>("\"Nowhere/Else\"").is_err());
    }

    #[test]
    fn branding_is_checked_when_set() {
        let b = Branding::new()
            .with_logo_url("https://cdn.example.org/maple.png")
            .unwrap()
            .with_accent_color("#2E7D32")
            .unwrap();
        assert_eq!(b.accent_color(), Some("#2e7d32"));
        assert_eq!(
            Branding::new().accent_color_or_default(),
            DEFAULT_ACCENT_COLOR
        );
        assert!(matches!(
            Branding::new().with_accent_color("#fff"),
            Err(InvalidBranding::AccentTooLight { .. })
        ));
        for bad in ["red", "#12345", "#12345g", "1a5fb4", "#1a5fb4; x: y"] {
            assert!(
                matches!(
                    Branding::new().with_accent_color(bad),
                    Err(InvalidBranding::AccentColor { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "javascript:alert(1)",
            "https://x.org/a b.png",
            "https://x.org/\"onerror=\"x",
            "https://",
        ] {
            assert!(Branding::new().with_logo_url(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Branding>(&json).unwrap(), b);
        assert!(serde_json::from_str::<Branding>(r##"{"accent_color":"#ffff00"}"##).is_err());
    }
}

//! DESIGN rule 10, "the address that counts is the delivered one", against a
//! reference model written here, independently of the crate's code.
//!
//! The model builds each mailbox from parts it knows (a local part's content, domain
//! labels from a table of U-labels and their A-labels worked out with another IDNA
//! implementation) and then writes it in many spellings that deliver to it: ASCII
//! case, fullwidth and other compatibility forms of letters and digits, characters
//! UTS #46 ignores (soft hyphen, zero-width space, word joiner...), ideographic full
//! stops, U-label or A-label, needless quoting and quoted pairs. Two spellings of one
//! mailbox must be `shared_email` at review and refused by mass edit; spellings of two
//! different mailboxes must not be.

use std::sync::Arc;

use owner_access::domain::{
    Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, Timestamp, delivered_key,
};
use owner_access::eligibility::Ineligible;
use owner_access::error::MassEditProblem;
use owner_access::prelude::*;
use owner_access::repository::EmailEdit;
use owner_access::{Error, InMemoryRepository, InMemoryTransport, OwnerAccess};
use proptest::prelude::*;

/// Local parts' contents. The first ones are dot-atoms; the last ones can only be
/// carried by a quoted string.
const LOCALS: [&str; 9] = [
    "ann",
    "bo.lee",
    "cy+hoa",
    "o'brien",
    "x_y-z",
    "a b",
    "x>y,z<w",
    "say \"hi\"",
    "back\\slash",
];

/// Domain labels: (U-label, A-label). ASCII labels are their own A-label. The
/// A-labels were computed with Python's `encodings.idna`, not with this crate.
const LABELS: [(&str, &str); 12] = [
    ("example", "example"),
    ("mail", "mail"),
    ("hoa-1", "hoa-1"),
    ("maple", "maple"),
    ("bücher", "xn--bcher-kva"),
    ("münchen", "xn--mnchen-3ya"),
    ("例え", "xn--r8jz45g"),
    ("ñandú", "xn--and-6ma2c"),
    ("παράδειγμα", "xn--hxajbheg2az3al"),
    ("пример", "xn--e1afmkfd"),
    ("zoë", "xn--zo-ija"),
    ("k9", "k9"),
];
const TLDS: [&str; 3] = ["org", "net", "example"];

/// Characters UTS #46 (and IDNA2003's nameprep) maps to nothing.
const IGNORED: [char; 7] = [
    '\u{AD}', '\u{34F}', '\u{180B}', '\u{200B}', '\u{2060}', '\u{FE00}', '\u{FEFF}',
];
/// What a domain's dots may be written as.
const DOTS: [char; 4] = ['.', '\u{3002}', '\u{FF0E}', '\u{FF61}'];

/// A mailbox as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mailbox {
    local: usize,
    labels: Vec<usize>,
    tld: usize,
}

impl Mailbox {
    fn content(&self) -> &'static str {
        LOCALS[self.local]
    }

    fn needs_quotes(&self) -> bool {
        self.local >= 5
    }

    /// The model's delivered address: the local part quoted only when it must be
    /// (escaping `"` and `\`), lower case; the A-labels.
    fn delivered(&self) -> String {
        let local = if self.needs_quotes() {
            let mut q = String::from("\"");
            for c in self.content().chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        } else {
            self.content().to_owned()
        };
        let mut domain: Vec<&str> = self.labels.iter().map(|&l| LABELS[l].1).collect();
        domain.push(TLDS[self.tld]);
        format!("{}@{}", local.to_ascii_lowercase(), domain.join("."))
    }
}

/// How one spelling writes each part (chosen by the generator, applied by `spell`).
#[derive(Debug, Clone)]
struct Spelling {
    quote: bool,
    /// Per character of the local part: upper-case it; write it as a quoted pair.
    local_marks: Vec<(bool, bool)>,
    /// Per label: write the A-label (else the U-label).
    a_label: Vec<bool>,
    /// Per character of the domain: 0 as is, 1 upper case, 2 a compatibility form.
    char_forms: Vec<u8>,
    /// Ignored characters to put inside labels: (position seed, which).
    ignored: Vec<(usize, usize)>,
    /// Which dot each separator is written with.
    dots: Vec<usize>,
    /// Spaces around the address.
    padded: bool,
}

/// A compatibility form that UTS #46 maps to `c` (an ASCII letter or digit).
fn compatibility_form(c: char, pick: usize) -> char {
    let lower = c.to_ascii_lowercase();
    let offset = |base: u32| char::from_u32(base + (lower as u32 - 'a' as u32)).unwrap();
    if c.is_ascii_digit() {
        return char::from_u32(0xFF10 + (c as u32 - '0' as u32)).unwrap();
    }
    match (lower, pick % 5) {
        ('k', 0) => '\u{212A}',       // KELVIN SIGN
        ('s', 0) => '\u{17F}',        // LATIN SMALL LETTER LONG S
        (_, 0 | 1) => offset(0xFF41), // FULLWIDTH SMALL
        (_, 2) => offset(0xFF21),     // FULLWIDTH CAPITAL
        (_, 3) => offset(0x24D0),     // CIRCLED SMALL
        _ => offset(0x1D41A),         // MATHEMATICAL BOLD SMALL
    }
}

fn spell(m: &Mailbox, s: &Spelling) -> String {
    let mut local = String::new();
    let quote = s.quote || m.needs_quotes();
    if quote {
        local.push('"');
    }
    for (i, c) in m.content().chars().enumerate() {
        let (upper, pair) = s.local_marks.get(i).copied().unwrap_or_default();
        let c = if upper { c.to_ascii_uppercase() } else { c };
        // A quoted pair never holds a space (the parser refuses `\ `), and `"`, `\`
        // must be one.
        if quote && (c == '"' || c == '\\' || (pair && c != ' ')) {
            local.push('\\');
        }
        local.push(c);
    }
    if quote {
        local.push('"');
    }
    let mut labels: Vec<String> = Vec::new();
    let mut k = 0;
    let written_labels = m.labels.iter().enumerate().map(|(i, &l)| {
        let (u, a) = LABELS[l];
        if s.a_label.get(i).copied().unwrap_or(false) {
            a
        } else {
            u
        }
    });
    for written in written_labels.chain([TLDS[m.tld]]) {
        let mut label = String::new();
        for c in written.chars() {
            let form = s.char_forms.get(k).copied().unwrap_or(0);
            k += 1;
            if !c.is_ascii() {
                // A U-label's letters: upper case or as is.
                if form == 1 {
                    label.extend(c.to_uppercase());
                } else {
                    label.push(c);
                }
            } else if c.is_ascii_alphanumeric() && form == 2 {
                label.push(compatibility_form(c, k));
            } else if form == 1 {
                label.push(c.to_ascii_uppercase());
            } else {
                label.push(c);
            }
        }
        labels.push(label);
    }
    // Ignored characters only strictly inside a label: the RFC 5322 parse wants a
    // label to start and end with a letter or digit. (Inside `xn--` too: UTS #46
    // maps before it reads the prefix.)
    for &(seed, which) in &s.ignored {
        let label = &mut labels[seed % m.labels.len()];
        let inside: Vec<usize> = label.char_indices().map(|(i, _)| i).skip(1).collect();
        if let Some(&at) = inside.get(seed % inside.len().max(1)) {
            label.insert(at, IGNORED[which % IGNORED.len()]);
        }
    }
    let mut domain = String::new();
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            domain.push(DOTS[s.dots.get(i).copied().unwrap_or(0) % DOTS.len()]);
        }
        domain.push_str(label);
    }
    let address = format!("{local}@{domain}");
    if s.padded {
        format!("  {address} ")
    } else {
        address
    }
}

fn mailbox() -> impl Strategy<Value = Mailbox> {
    (
        0..LOCALS.len(),
        prop::collection::vec(0..LABELS.len(), 1..3),
        0..TLDS.len(),
    )
        .prop_map(|(local, labels, tld)| Mailbox { local, labels, tld })
}

/// Another mailbox: the same one, one that differs from it in one part, or any.
fn other_than(m: Mailbox) -> impl Strategy<Value = Mailbox> {
    let same = Just(m.clone());
    let near = (0..3usize, 0..LABELS.len().max(LOCALS.len())).prop_map(move |(part, pick)| {
        let mut n = m.clone();
        match part {
            0 => n.local = pick % LOCALS.len(),
            1 => n.tld = pick % TLDS.len(),
            _ => n.labels[0] = pick % LABELS.len(),
        }
        n
    });
    prop_oneof![same, near, mailbox()]
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<bool>(),
        prop::collection::vec((any::<bool>(), prop::bool::weighted(0.2)), 12),
        prop::collection::vec(any::<bool>(), 2),
        prop::collection::vec(
            prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
            40,
        ),
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..3),
        prop::collection::vec(prop_oneof![4 => Just(0usize), 1 => 1..DOTS.len()], 4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(quote, local_marks, a_label, char_forms, ignored, dots, padded)| Spelling {
                quote,
                local_marks,
                a_label,
                char_forms,
                ignored,
                dots,
                padded,
            },
        )
}

fn owner(id: &str, email: Option<String>) -> Owner {
    let mut o = Owner::new(
        OwnerId::new(id).unwrap(),
        CommunityId::new("c1").unwrap(),
        PropertyId::new(format!("unit-{id}")).unwrap(),
        "F",
        "L",
    );
    o.primary_email = email;
    o
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn property(id: &str) -> PropertyId {
    PropertyId::new(format!("unit-{id}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every spelling is accepted, and is sent to the model's delivered address.
    #[test]
    fn every_spelling_is_delivered_to_the_models_address(m in mailbox(), s in spelling()) {
        let written = spell(&m, &s);
        let parsed = EmailAddress::parse(&written);
        prop_assert!(parsed.is_ok(), "{written:?}: {parsed:?}");
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.smtp_form().to_ascii_lowercase(), m.delivered(), "{:?}", written);
        prop_assert_eq!(delivered_key(&written), m.delivered(), "{:?}", written);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two spellings of one mailbox are shared, each naming the other's property; a
    /// third owner's spelling is shared with them exactly when the model says it is
    /// the same mailbox; mass edit refuses a fourth spelling of a held mailbox.
    #[test]
    fn spellings_of_one_mailbox_are_caught(
        (m, other) in mailbox().prop_flat_map(|m| (Just(m.clone()), other_than(m))),
        s1 in spelling(),
        s2 in spelling(),
        s3 in spelling(),
        s4 in spelling(),
    ) {
        let (a, b, c) = (spell(&m, &s1), spell(&m, &s2), spell(&other, &s3));
        let same = m.delivered() == other.delivered();
        runtime().block_on(async {
            let repo = Arc::new(InMemoryRepository::new());
            let community = CommunityId::new("c1").unwrap();
            repo.upsert_community(&Community::new(community.clone(), "C")).await.unwrap();
            let owners = vec![
                owner("a", Some(a.clone())),
                owner("b", Some(b.clone())),
                owner("c", Some(c.clone())),
                owner("d", None),
            ];
            repo.upsert_owners(&owners, Timestamp::from_unix_seconds(0)).await.unwrap();
            let service = OwnerAccess::builder(repo.clone(), Arc::new(InMemoryTransport::new()))
                .sender("no-reply@portal.example.com")
                .portal_url("https://portal.example.com/register")
                .build()
                .unwrap();
            let selection = ["a", "b", "c"].iter().map(|i| OwnerId::new(*i).unwrap()).collect();
            let invite = service.compose(&community, &selection).await.unwrap();
            let review = service.review(&invite).await.unwrap();
            let reason = |id: &str| {
                review
                    .excluded
                    .iter()
                    .find(|e| e.owner.as_str() == id)
                    .map(|e| e.reason.clone())
            };
            let shared = |with: &[&str]| Some(Ineligible::SharedEmail {
                with: with.iter().map(|i| property(i)).collect(),
            });
            if same {
                prop_assert_eq!(reason("a"), shared(&["b", "c"]), "{:?} {:?} {:?}", a, b, c);
                prop_assert_eq!(reason("b"), shared(&["a", "c"]));
                prop_assert_eq!(reason("c"), shared(&["a", "b"]));
            } else {
                prop_assert_eq!(reason("a"), shared(&["b"]), "{:?} {:?}", a, b);
                prop_assert_eq!(reason("b"), shared(&["a"]));
                prop_assert_eq!(reason("c"), None, "{:?} vs {:?}", c, a);
            }
            // Mass edit: a fourth spelling of `m` for the owner without an address.
            let fourth = spell(&m, &s4);
            let edits = [EmailEdit { owner: OwnerId::new("d").unwrap(), email: Some(fourth.clone()) }];
            let refused = service.mass_edit_emails(&community, &edits).await;
            let mut holders = vec![OwnerId::new("a").unwrap(), OwnerId::new("b").unwrap()];
            if same {
                holders.push(OwnerId::new("c").unwrap());
            }
            match refused {
                Err(Error::MassEditRejected { problems }) => prop_assert_eq!(
                    problems,
                    vec![MassEditProblem::SharedEmail {
                        owner: OwnerId::new("d").unwrap(),
                        email: fourth.clone(),
                        with: holders,
                    }]
                ),
                other => prop_assert!(false, "{fourth:?} was not refused: {other:?}"),
            }
            // The directory refuses it as well, called directly.
            let direct = repo.update_emails(&edits).await;
            prop_assert!(direct.is_err(), "{fourth:?}: the store took it");
            Ok(())
        })?;
    }
}

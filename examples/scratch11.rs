use owner_access::domain::{EmailAddress, delivered_key};
fn main() {
    for s in [
        "  ANn@πΑράΔεΙγμα.παΡάδΕιΓμα.ｅxAmple ",
        "AnN@ｘn--HxaJBhEg２aｚ3Ａl．πΑΡΆδεΙ\u{200b}Γμα．ExAＭPle",
        "AnN@ｘn--HxaJBhEg２aｚ3Ａl.example",
        "a@πΑΡΆδεΙ\u{200b}Γμα.example",
        "a@πΑΡΆδεΙΓμα.example",
        "a@x.πΑΡΆδεΙ\u{200b}Γμα．ExAＭPle",
        "a@x．y．ExAＭPle",
    ] {
        println!(
            "{s:?} -> {:?} / {:?}",
            delivered_key(s),
            EmailAddress::parse(s).map(|a| a.smtp_form().to_owned())
        );
    }
}

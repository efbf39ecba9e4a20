//! The ABI evolution rules of the crate docs, checked on the source: a `sabi_trait`
//! method appended after `#[sabi(last_prefix_field)]` must have a default body (else a
//! host calling it on an older plugin's object panics), and every addition is fenced so
//! the older-minor fixture can be built.

use std::path::Path;

fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// `(trait name, methods after the last prefix field without a body)` per `sabi_trait`.
fn appended_without_default(text: &str) -> Vec<(String, String)> {
    let mut bad = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[sabi_trait]" {
            i += 1;
            continue;
        }
        let name = lines[i + 1].split_whitespace().nth(2).unwrap_or("?").trim_end_matches(':').to_owned();
        let mut after_prefix = false;
        let mut j = i + 2;
        while j < lines.len() && lines[j] != "}" {
            let t = lines[j].trim();
            if t == "#[sabi(last_prefix_field)]" {
                after_prefix = true;
                j += 2; // the prefix's last method itself
                continue;
            }
            if after_prefix && t.starts_with("fn ") {
                let mut sig = String::new();
                let mut k = j;
                while k < lines.len() && !sig.trim_end().ends_with(';') && !sig.trim_end().ends_with('{') {
                    sig.push_str(lines[k].trim());
                    k += 1;
                }
                if sig.trim_end().ends_with(';') {
                    bad.push((name.clone(), sig));
                }
            }
            j += 1;
        }
        i = j;
    }
    bad
}

#[test]
fn appended_methods_have_default_bodies() {
    let mut bad = Vec::new();
    for (file, text) in sources() {
        bad.extend(appended_without_default(&text).into_iter().map(|(t, m)| format!("{file}: {t}: {m}")));
    }
    assert!(bad.is_empty(), "sabi_trait methods appended without a default body:\n{}", bad.join("\n"));
}

#[test]
fn the_rule_checker_catches_a_method_without_default() {
    let text = "#[sabi_trait]\npub trait FfiX: Send {\n    fn a(&self) -> u32;\n    #[sabi(last_prefix_field)]\n    fn b(&self) -> u32;\n    fn c(&self) -> u32;\n    fn d(&self) -> u32 {\n        0\n    }\n}\n";
    let bad = appended_without_default(text);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].1.starts_with("fn c"), "{bad:?}");
}

#[test]
fn additions_are_fenced_in_pairs() {
    for (file, text) in sources() {
        for minor in 1..=musefs_plugin_api::ABI_MINOR {
            let opens = text.matches(&format!("// abi-since 2.{minor} {{")).count();
            let closes = text.matches(&format!("// abi-since 2.{minor} }}")).count();
            assert_eq!(opens, closes, "{file}: unbalanced abi-since 2.{minor} fences");
        }
    }
}

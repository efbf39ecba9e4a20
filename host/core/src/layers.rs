//! The layer rule of the crate docs, checked: every `crate::MODULE` a source file names
//! belongs to a lower layer than the file's own module (or to the same module).

use std::path::{Path, PathBuf};

/// The layers, bottom first (the crate docs' diagram).
const LAYERS: &[&[&str]] = &[
    &["util", "template", "progress", "sys", "image", "wake"],
    &["manifest", "metrics"],
    &["catalog"],
    &["tree"],
    &["cache", "origin_layer", "overlay"],
    &["state", "plugins"],
    &["scanner"],
    &["sync", "status"],
    &["serve"],
    &["assemble"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules named as `crate::NAME` (also inside `use crate::{a, b}` groups).
fn referenced(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push(name);
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|n| !n.is_empty() && n.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let own = rel.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs").to_owned();
        if own == "lib" || own == "layers" {
            continue;
        }
        let own_layer =
            layer(&own).unwrap_or_else(|| panic!("module `{own}` is in no layer: add it to LAYERS and the crate docs"));
        for name in referenced(&std::fs::read_to_string(f).unwrap()) {
            let Some(l) = layer(&name) else { continue };
            if name != own && l >= own_layer {
                bad.push(format!("{}: `{own}` (layer {own_layer}) uses `{name}` (layer {l})", rel.display()));
            }
        }
    }
    assert!(bad.is_empty(), "upward or sideways references:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_plain_references() {
    let r = referenced("use crate::{tree::Tree, catalog};\nlet x = crate::serve::Core::new();");
    assert_eq!(r, ["tree", "catalog", "serve"]);
}

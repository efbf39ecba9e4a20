//! Fuzzes the template language: the first line is a template, the other lines
//! `key=value` tags. Parsing never panics (bad input is a `TemplateError` with a column
//! inside the template); a parsed template renders any tags into a path whose components,
//! once sanitised as the tree does, are never empty, `.` or `..`, never hold `/` or NUL,
//! and fit in 255 bytes.
#![no_main]

use musefs_core::template::{sanitize_component, Fields, RenderOptions, Template};

struct Tags(Vec<(String, String)>);

impl Fields for Tags {
    fn values(&self, field: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == field).map(|(_, v)| v.clone()).collect()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let src = lines.next().unwrap_or("");
    let template = match Template::parse(src) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.column >= 1 && e.column <= src.chars().count() + 1, "column {} of {src:?}", e.column);
            return;
        }
    };
    let tags = Tags(
        lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_lowercase(), v.to_owned()))
            .collect(),
    );
    let rendered = template.render(&tags, &RenderOptions::default());
    for c in rendered.split('/') {
        let c = sanitize_component(c, 255);
        assert!(!c.is_empty() && c != "." && c != "..", "component {c:?} of {rendered:?}");
        assert!(!c.contains('/') && !c.contains('\0') && c.len() <= 255, "component {c:?}");
    }
});

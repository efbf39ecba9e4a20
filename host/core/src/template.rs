//! Path templates: `$albumartist/$album/[$disc-]$track $title`.
//!
//! Syntax:
//! - `$field` or `${field}`: a tag value (multi-valued fields are joined with `, `);
//! - `${a|b|"literal"}`: the first non-empty of the alternatives;
//! - `[ ... ]`: a conditional section, dropped when a field inside is empty;
//! - `%func{arg,arg}`: `lower`, `upper`, `title`, `left{s,n}`, `right{s,n}`,
//!   `if{cond,then[,else]}`, `ifdef{field,then[,else]}`, `first{s}`, `pad{s,n}`;
//! - `\x` takes `x` literally; `$$` and `%%` are a literal `$` and `%`.
//!
//! `/` in the template separates directories; `/` inside values never does (it is
//! replaced), so a tag can never create a directory or escape the mount.

use std::fmt;

/// A template parse error, with the 1-based column it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The 1-based character column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The template text.
    pub template: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "template error at column {}: {}\n  {}\n  {}^",
            self.column,
            self.message,
            self.template,
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Alt {
    Field(String),
    Lit(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Lit(String),
    Field(Vec<Alt>),
    Section(Vec<Node>),
    Func(Func, Vec<Vec<Node>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Lower,
    Upper,
    Title,
    Left,
    Right,
    If,
    IfDef,
    First,
    Pad,
}

impl Func {
    fn parse(name: &str) -> Option<(Self, usize, usize)> {
        Some(match name {
            "lower" => (Self::Lower, 1, 1),
            "upper" => (Self::Upper, 1, 1),
            "title" => (Self::Title, 1, 1),
            "left" => (Self::Left, 2, 2),
            "right" => (Self::Right, 2, 2),
            "if" => (Self::If, 2, 3),
            "ifdef" => (Self::IfDef, 2, 3),
            "first" => (Self::First, 1, 1),
            "pad" => (Self::Pad, 2, 2),
            _ => return None,
        })
    }
}

/// Where values come from when rendering.
pub trait Fields {
    /// The values of `field` (lower-case name), empty if unset.
    fn values(&self, field: &str) -> Vec<String>;
}

/// Rendering options.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Zero-pad `$track` to this many digits.
    pub track_digits: usize,
    /// Zero-pad `$disc` to this many digits.
    pub disc_digits: usize,
    /// What replaces `/` inside values.
    pub slash_replacement: String,
    /// Names that differ only in case are one name (`case_insensitive`): directories
    /// merge, files get ` (2)`, lookups ignore case.
    pub case_insensitive: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { track_digits: 2, disc_digits: 0, slash_replacement: "_".into(), case_insensitive: false }
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    source: String,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self, column: usize, message: impl Into<String>) -> TemplateError {
        TemplateError { column, message: message.into(), template: self.src.to_owned() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Parses until one of `stops` (at depth 0) or the end; returns the nodes and the stop hit.
    fn seq(&mut self, stops: &[char], in_func: bool) -> Result<(Vec<Node>, Option<char>), TemplateError> {
        let mut nodes = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, nodes: &mut Vec<Node>| {
            if !lit.is_empty() {
                nodes.push(Node::Lit(std::mem::take(lit)));
            }
        };
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                flush(&mut lit, &mut nodes);
                self.pos += 1;
                return Ok((nodes, Some(c)));
            }
            let col = self.pos + 1;
            self.pos += 1;
            match c {
                '\\' => match self.peek() {
                    Some(n) => {
                        lit.push(n);
                        self.pos += 1;
                    }
                    None => return Err(self.err(col, "a `\\` at the end escapes nothing")),
                },
                '$' if self.peek() == Some('$') => {
                    lit.push('$');
                    self.pos += 1;
                }
                '%' if self.peek() == Some('%') => {
                    lit.push('%');
                    self.pos += 1;
                }
                '$' => {
                    flush(&mut lit, &mut nodes);
                    nodes.push(self.field(col)?);
                }
                '%' => {
                    flush(&mut lit, &mut nodes);
                    nodes.push(self.func(col)?);
                }
                '[' => {
                    flush(&mut lit, &mut nodes);
                    let (inner, stop) = self.seq(&[']'], false)?;
                    if stop.is_none() {
                        return Err(self.err(col, "this `[` is never closed with `]`"));
                    }
                    nodes.push(Node::Section(inner));
                }
                ']' => return Err(self.err(col, "`]` without a matching `[`")),
                '}' if !in_func => lit.push('}'),
                _ => lit.push(c),
            }
        }
        flush(&mut lit, &mut nodes);
        Ok((nodes, None))
    }

    fn name(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                s.push(c.to_ascii_lowercase());
                self.pos += 1;
            } else {
                break;
            }
        }
        s
    }

    fn field(&mut self, col: usize) -> Result<Node, TemplateError> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Err(self.err(col, "`$` must be followed by a field name, `{`, or another `$`"));
            }
            return Ok(Node::Field(vec![Alt::Field(name)]));
        }
        self.pos += 1;
        let mut alts = Vec::new();
        loop {
            let acol = self.pos + 1;
            match self.peek() {
                Some('"') => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\\') => {
                                self.pos += 1;
                                if let Some(c) = self.peek() {
                                    s.push(c);
                                    self.pos += 1;
                                }
                            }
                            Some(c) => {
                                s.push(c);
                                self.pos += 1;
                            }
                            None => return Err(self.err(acol, "unterminated string literal")),
                        }
                    }
                    alts.push(Alt::Lit(s));
                }
                _ => {
                    let name = self.name();
                    if name.is_empty() {
                        return Err(self.err(acol, "expected a field name or a \"literal\""));
                    }
                    alts.push(Alt::Field(name));
                }
            }
            match self.peek() {
                Some('|') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    return Ok(Node::Field(alts));
                }
                Some(c) => {
                    return Err(self.err(self.pos + 1, format!("unexpected `{c}` in `${{...}}`: expected `|` or `}}`")))
                }
                None => return Err(self.err(col, "this `${` is never closed with `}`")),
            }
        }
    }

    fn func(&mut self, col: usize) -> Result<Node, TemplateError> {
        let name = self.name();
        if name.is_empty() {
            return Err(self.err(col, "`%` must be followed by a function name or another `%`"));
        }
        let (func, min, max) =
            Func::parse(&name).ok_or_else(|| self.err(col, format!("unknown function `%{name}`")))?;
        if self.peek() != Some('{') {
            return Err(self.err(self.pos + 1, format!("`%{name}` must be followed by `{{`")));
        }
        self.pos += 1;
        let mut args = Vec::new();
        loop {
            let (arg, stop) = self.seq(&[',', '}'], true)?;
            args.push(arg);
            match stop {
                Some(',') => continue,
                Some(_) => break,
                None => return Err(self.err(col, format!("`%{name}{{` is never closed with `}}`"))),
            }
        }
        if args.len() < min || args.len() > max {
            let want = if min == max { min.to_string() } else { format!("{min} to {max}") };
            return Err(self.err(col, format!("`%{name}` takes {want} arguments, got {}", args.len())));
        }
        if func == Func::IfDef && !matches!(args[0].as_slice(), [Node::Lit(_)]) {
            return Err(self.err(col, "`%ifdef`'s first argument must be a plain field name"));
        }
        if matches!(func, Func::Pad | Func::Left | Func::Right) {
            // A literal count is checked now; one that comes from a field is clamped.
            if let [Node::Lit(n)] = args[1].as_slice() {
                match n.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_COUNT => {}
                    _ => {
                        return Err(self.err(
                            col,
                            format!("`%{name}`'s count {:?} is not a number from 0 to {MAX_COUNT}", n.trim()),
                        ))
                    }
                }
            }
        }
        Ok(Node::Func(func, args))
    }
}

/// Fields that render only their first value (numbers: a track has one position).
pub const SINGLE_VALUED: &[&str] = &["track", "disc", "date", "year", "originaldate", "tracktotal", "disctotal", "bpm"];

/// The version of the rendering rules, part of the tree snapshot's key: bump it when a
/// change renders the same tags to other names, so no snapshot of the old rules is
/// loaded. 2: identical values merged, numeric fields single-valued. 3: `$filename`,
/// `$dirname`, `$origin`. 4: a leading `.` becomes `_` (no hidden names).
pub const RENDER_VERSION: u32 = 4;

/// The largest count `%pad`, `%left` and `%right` take (a path component is at most 255
/// bytes anyway).
pub const MAX_COUNT: usize = 255;

/// A count argument as rendered: a number, clamped to [`MAX_COUNT`]; anything else 0.
fn count(text: &str) -> usize {
    text.trim().parse::<usize>().map_or(0, |n| n.min(MAX_COUNT))
}

/// One rendered value: its text and whether a field in it was empty.
struct Val {
    values: Vec<String>,
    missing: bool,
}

impl Val {
    fn text(&self) -> String {
        self.values.join(", ")
    }
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// A [`TemplateError`] pointing at the offending column.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut p = Parser { chars: src.chars().collect(), pos: 0, src };
        let (nodes, _) = p.seq(&[], false)?;
        if nodes.is_empty() {
            return Err(p.err(1, "the template is empty"));
        }
        Ok(Self { nodes, source: src.to_owned() })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every field name the template can read (for loading only what is needed).
    pub fn fields(&self) -> Vec<String> {
        fn walk(nodes: &[Node], out: &mut Vec<String>) {
            for n in nodes {
                match n {
                    Node::Field(alts) => out.extend(alts.iter().filter_map(|a| match a {
                        Alt::Field(f) => Some(f.clone()),
                        Alt::Lit(_) => None,
                    })),
                    Node::Section(inner) => walk(inner, out),
                    Node::Func(f, args) => {
                        if *f == Func::IfDef {
                            if let [Node::Lit(name)] = args[0].as_slice() {
                                out.push(name.trim().to_ascii_lowercase());
                            }
                        }
                        for a in args {
                            walk(a, out);
                        }
                    }
                    Node::Lit(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.nodes, &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// Renders to a relative path (components separated by `/`, not yet sanitised).
    pub fn render(&self, fields: &dyn Fields, opts: &RenderOptions) -> String {
        self.eval_seq(&self.nodes, fields, opts).text()
    }

    fn eval_seq(&self, nodes: &[Node], f: &dyn Fields, o: &RenderOptions) -> Val {
        if let [single] = nodes {
            return self.eval(single, f, o);
        }
        let mut text = String::new();
        let mut missing = false;
        for n in nodes {
            let v = self.eval(n, f, o);
            missing |= v.missing;
            match v.values.as_slice() {
                [one] => text.push_str(one),
                _ => text.push_str(&v.text()),
            }
        }
        Val { values: vec![text], missing }
    }

    fn field_values(name: &str, f: &dyn Fields, o: &RenderOptions) -> Vec<String> {
        let digits = match name {
            "track" => o.track_digits,
            "disc" => o.disc_digits,
            _ => 0,
        };
        let mut out: Vec<String> = Vec::new();
        for v in f.values(name) {
            let v = if digits > 0 || name == "track" || name == "disc" { number_part(&v, digits) } else { v };
            let v = if v.contains(['/', '\0']) { v.replace('/', &o.slash_replacement).replace('\0', "") } else { v };
            // Identical values of a field are one value (`DISC=4` and `DISCNUMBER=4`).
            if !v.trim().is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
        // A number names one position: the first value, never `4, 5`.
        if SINGLE_VALUED.contains(&name) {
            out.truncate(1);
        }
        out
    }

    fn eval(&self, node: &Node, f: &dyn Fields, o: &RenderOptions) -> Val {
        match node {
            Node::Lit(s) => Val { values: vec![s.clone()], missing: false },
            Node::Field(alts) => {
                for alt in alts {
                    match alt {
                        Alt::Lit(s) => {
                            return Val { values: vec![s.replace('/', &o.slash_replacement)], missing: false }
                        }
                        Alt::Field(name) => {
                            let vals = Self::field_values(name, f, o);
                            if !vals.is_empty() {
                                return Val { values: vals, missing: false };
                            }
                        }
                    }
                }
                Val { values: vec![String::new()], missing: true }
            }
            Node::Section(inner) => {
                let v = self.eval_seq(inner, f, o);
                if v.missing {
                    Val { values: vec![String::new()], missing: false }
                } else {
                    Val { values: vec![v.text()], missing: false }
                }
            }
            Node::Func(func, args) => {
                let arg = |i: usize| self.eval_seq(&args[i], f, o);
                let one = |s: String, missing: bool| Val { values: vec![s], missing };
                match func {
                    Func::Lower => {
                        let a = arg(0);
                        one(a.text().to_lowercase(), a.missing)
                    }
                    Func::Upper => {
                        let a = arg(0);
                        one(a.text().to_uppercase(), a.missing)
                    }
                    Func::Title => {
                        let a = arg(0);
                        one(title_case(&a.text()), a.missing)
                    }
                    Func::Left | Func::Right => {
                        let a = arg(0);
                        let n = count(&arg(1).text());
                        let t = a.text();
                        let s: String = if *func == Func::Left {
                            t.chars().take(n).collect()
                        } else {
                            let count = t.chars().count();
                            t.chars().skip(count.saturating_sub(n)).collect()
                        };
                        one(s, a.missing)
                    }
                    Func::If => {
                        let cond = arg(0);
                        if !cond.text().trim().is_empty() {
                            arg(1)
                        } else if args.len() > 2 {
                            arg(2)
                        } else {
                            one(String::new(), false)
                        }
                    }
                    Func::IfDef => {
                        let name = match args[0].as_slice() {
                            [Node::Lit(n)] => n.trim().to_ascii_lowercase(),
                            _ => String::new(),
                        };
                        if !Self::field_values(&name, f, o).is_empty() {
                            arg(1)
                        } else if args.len() > 2 {
                            arg(2)
                        } else {
                            one(String::new(), false)
                        }
                    }
                    Func::First => {
                        let a = arg(0);
                        one(a.values.first().cloned().unwrap_or_default(), a.missing)
                    }
                    Func::Pad => {
                        let a = arg(0);
                        one(number_part(&a.text(), count(&arg(1).text())), a.missing)
                    }
                }
            }
        }
    }
}

/// `"3/12"` → `"03"` for `digits = 2`; non-numeric values are returned unchanged.
fn number_part(v: &str, digits: usize) -> String {
    let head = v.split('/').next().unwrap_or("").trim();
    match head.parse::<u64>() {
        Ok(n) => format!("{n:0digits$}"),
        Err(_) => v.to_owned(),
    }
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
            start = false;
        } else {
            out.extend(c.to_lowercase());
            if c.is_whitespace() || c == '-' || c == '(' {
                start = true;
            } else if c.is_alphanumeric() {
                start = false;
            }
        }
    }
    out
}

/// Makes one path component safe: control characters removed, surrounding spaces
/// trimmed, empty names replaced, a leading `.` replaced by `_` (so `.`, `..` and
/// hidden names cannot come from a tag: media servers and beets skip dot-names), at
/// most `max_bytes` bytes (cut on a UTF-8 boundary).
pub fn sanitize_component(s: &str, max_bytes: usize) -> String {
    let mut out = String::new();
    sanitize_into(&mut out, s, max_bytes);
    out
}

/// [`sanitize_component`] appended to `out`.
pub fn sanitize_into(out: &mut String, s: &str, max_bytes: usize) {
    // Most names need nothing: no control character or slash, no space at either end,
    // no leading dot, short enough.
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= max_bytes
            && !s.starts_with(['.', ' '])
            && !s.ends_with(' ')
            && !s.chars().any(|c| c.is_control() || c == '/' || c.is_whitespace() && c != ' ')
    };
    if plain(s) {
        out.push_str(s);
    } else {
        out.push_str(&sanitize_slowly(s, max_bytes));
    }
}

fn sanitize_slowly(s: &str, max_bytes: usize) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control() && *c != '/').collect();
    let trimmed = cleaned.trim();
    let mut out = match trimmed.strip_prefix('.') {
        _ if trimmed.is_empty() => "_".to_owned(),
        Some(".") => "__".to_owned(),
        Some(rest) => format!("_{rest}"),
        None => trimmed.to_owned(),
    };
    truncate_utf8(&mut out, max_bytes);
    out
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn sanitizing_a_plain_name_quickly_gives_what_the_full_rules_give() {
        // Every string of up to three characters from an alphabet of the cases the rules
        // treat apart, at limits that cut inside and around them.
        let alphabet = ['a', ' ', '.', '/', '\t', '\0', '\u{a0}', 'é', '\u{2003}', '\u{7f}'];
        let mut words = vec![String::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for w in words.iter().filter(|w| w.chars().count() == len - 1) {
                for c in alphabet {
                    next.push(format!("{w}{c}"));
                }
            }
            words.extend(next);
        }
        for w in &words {
            for max in [1, 2, 3, 255] {
                assert_eq!(sanitize_component(w, max), sanitize_slowly(w, max), "{w:?} at {max} bytes");
            }
        }
    }

    struct F(HashMap<&'static str, Vec<&'static str>>);

    impl Fields for F {
        fn values(&self, field: &str) -> Vec<String> {
            self.0.get(field).map(|v| v.iter().map(|s| (*s).to_owned()).collect()).unwrap_or_default()
        }
    }

    fn f(pairs: &[(&'static str, &'static str)]) -> F {
        let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
        for (k, v) in pairs {
            m.entry(k).or_default().push(v);
        }
        F(m)
    }

    fn r(t: &str, fields: &F) -> String {
        Template::parse(t).unwrap().render(fields, &RenderOptions::default())
    }

    #[test]
    fn default_template_with_sections_and_padding() {
        let t = "$albumartist/$album/[$disc-]$track $title";
        let a = f(&[("albumartist", "AC/DC"), ("album", "Back"), ("track", "3/12"), ("title", "Hells")]);
        assert_eq!(r(t, &a), "AC_DC/Back/03 Hells");
        let b = f(&[("albumartist", "X"), ("album", "Y"), ("disc", "2"), ("track", "1"), ("title", "Z")]);
        assert_eq!(r(t, &b), "X/Y/2-01 Z");
    }

    #[test]
    fn fallbacks_functions_and_multi_values() {
        let a = f(&[("artist", "Beta"), ("artist", "Gamma"), ("title", "hello wORLD")]);
        assert_eq!(r("${albumartist|artist|\"Unknown\"}", &a), "Beta, Gamma");
        assert_eq!(r("%first{$artist}", &a), "Beta");
        assert_eq!(r("${composer|\"Unknown\"}", &a), "Unknown");
        assert_eq!(r("%title{$title}|%upper{$title}|%lower{$title}", &a), "Hello World|HELLO WORLD|hello world");
        assert_eq!(r("%left{$title,3}%right{$title,3}", &a), "helRLD");
        assert_eq!(r("%if{$composer,yes,no} %ifdef{artist,has}", &a), "no has");
        assert_eq!(r("%pad{7,3} \\$x $$ %%", &a), "007 $x $ %");
        assert_eq!(Template::parse("$a/${b|c}/%ifdef{d,x}").unwrap().fields(), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn parse_errors_point_at_the_column() {
        for (t, col) in
            [("abc $", 5), ("[x", 1), ("a]", 2), ("%nope{x}", 1), ("%left{x}", 1), ("${a", 1), ("${a b}", 4)]
        {
            let e = Template::parse(t).unwrap_err();
            assert_eq!(e.column, col, "{t}: {e}");
        }
        let e = Template::parse("x %upperr{y}").unwrap_err();
        assert!(e.to_string().contains("unknown function `%upperr`"), "{e}");
    }

    #[test]
    fn hostile_values_cannot_make_directories() {
        let a = f(&[("artist", "../.."), ("title", "/etc/passwd")]);
        let out = r("$artist/$title", &a);
        assert_eq!(out, ".._.._etc_passwd".replacen("_etc", "/_etc", 1));
        let comps: Vec<_> = out.split('/').map(|c| sanitize_component(c, 255)).collect();
        assert_eq!(comps, vec!["_._..", "_etc_passwd"]);
        assert_eq!(sanitize_component("..", 255), "__");
        assert_eq!(sanitize_component(".", 255), "_");
        assert_eq!(sanitize_component(" a\u{7}b\n ", 255), "ab");
        let mut long = "é".repeat(200);
        truncate_utf8(&mut long, 255);
        assert_eq!(long.len(), 254);
    }

    /// Regression: an artist `../..` rendered the directory `.._..`, hidden from beets,
    /// Navidrome and Jellyfin (they skip dot-names), so its files never reached them.
    #[test]
    fn a_tag_starting_with_a_dot_renders_a_visible_name() {
        assert_eq!(sanitize_component(".5: The Gray Chapter", 255), "_5: The Gray Chapter");
        assert_eq!(sanitize_component("  .hidden", 255), "_hidden");
        assert_eq!(sanitize_component("a.b.", 255), "a.b.");
    }

    /// Regression: `%pad{$track,70000}` panicked in `format!` (width out of range) and
    /// took `scan` and `ls` down with exit 101.
    #[test]
    fn a_huge_pad_width_is_a_parse_error_not_a_panic() {
        for t in ["%pad{$track,70000}", "%left{$title,99999999999999999999}", "%right{$a,-1}", "%pad{$t,x}"] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.to_string().contains("is not a number from 0 to 255"), "{t}: {e}");
            assert_eq!(e.column, 1, "{t}");
        }
        // A count from a field is clamped when rendered.
        let a = f(&[("n", "70000"), ("track", "7"), ("title", "abc")]);
        assert_eq!(r("%pad{$track,$n}", &a).len(), MAX_COUNT);
        assert_eq!(r("%left{$title,$n}", &a), "abc");
        assert_eq!(r("%pad{$track,255}", &a).len(), 255);
    }

    /// Regression: a FLAC with both `DISC=4` and `DISCNUMBER=4` rendered `[$disc-]` as
    /// `4, 4-`.
    #[test]
    fn identical_values_merge_and_numbers_render_their_first_value() {
        let a = f(&[
            ("disc", "4"),
            ("disc", "4"),
            ("track", "3/12"),
            ("track", "5"),
            ("artist", "A"),
            ("artist", "B"),
            ("artist", "A"),
        ]);
        assert_eq!(r("[$disc-]$track", &a), "4-03");
        assert_eq!(r("$artist", &a), "A, B");
        let b = f(&[("date", "1999"), ("date", "2001-05-01")]);
        assert_eq!(r("$date", &b), "1999");
    }
}

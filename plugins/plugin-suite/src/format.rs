//! The format behaviour suite: for each fixture file, each check is one trial named
//! `format::PLUGIN::FIXTURE::CHECK`; checks of the plugin as a whole are
//! `format::PLUGIN::CHECK`.

use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use musefs_plugin_api::{
    handle_into_ffi, testing::MemHandle, CallCtx, ErrorKind, FormatBox, Plan, PlanMode, PlanRequest, PluginResult,
    SegmentKind, Tag, TrackInfo, PROBE_HEAD_LEN,
};

use crate::{check, lcg};

/// One file a format should serve.
#[derive(Clone)]
pub struct Fixture {
    /// A short name (the trial names use it).
    pub name: String,
    /// The file's bytes.
    pub data: Arc<Vec<u8>>,
    /// Its extension, lower case, without the dot.
    pub extension: String,
    /// Whether it carries a title tag.
    pub tagged: bool,
}

impl Fixture {
    /// A fixture with a title tag; the extension is taken from `name`.
    pub fn tagged(name: &str, data: Vec<u8>) -> Self {
        let extension = name.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_lowercase();
        Self { name: name.to_owned(), data: Arc::new(data), extension, tagged: true }
    }

    /// A fixture without tags.
    pub fn untagged(name: &str, data: Vec<u8>) -> Self {
        Self { tagged: false, ..Self::tagged(name, data) }
    }
}

/// What a format says it can do; a check needing a capability it lacks is ignored.
#[derive(Debug, Clone, Copy)]
pub struct FormatCaps {
    /// It builds headers from edited tags (synthesis mode), not only passthrough.
    pub synthesis: bool,
}

impl Default for FormatCaps {
    fn default() -> Self {
        Self { synthesis: true }
    }
}

/// A format plugin under test.
pub struct FormatUnderTest {
    name: String,
    format: Arc<FormatBox>,
    fixtures: Vec<Fixture>,
    rivals: Vec<(String, Arc<FormatBox>)>,
    caps: FormatCaps,
}

impl FormatUnderTest {
    /// The format `format` (a [`FormatBox`] or a shared one) of plugin `name`, with no
    /// fixtures yet.
    pub fn new(name: &str, format: impl Into<Arc<FormatBox>>) -> Self {
        Self {
            name: name.to_owned(),
            format: format.into(),
            fixtures: Vec::new(),
            rivals: Vec::new(),
            caps: FormatCaps::default(),
        }
    }

    /// Adds a fixture file.
    #[must_use]
    pub fn fixture(mut self, f: Fixture) -> Self {
        self.fixtures.push(f);
        self
    }

    /// Adds another format that must probe this one's fixtures lower.
    #[must_use]
    pub fn rival(mut self, name: &str, format: Arc<FormatBox>) -> Self {
        self.rivals.push((name.to_owned(), format));
        self
    }

    /// Sets the capabilities.
    #[must_use]
    pub fn caps(mut self, caps: FormatCaps) -> Self {
        self.caps = caps;
        self
    }
}

fn read(f: &FormatBox, data: &[u8]) -> PluginResult<TrackInfo> {
    f.read(&CallCtx::unlimited(), &handle_into_ffi(Arc::new(MemHandle::new(data.to_vec())))).into_result()
}

fn plan(f: &FormatBox, data: &[u8], req: &PlanRequest) -> PluginResult<Plan> {
    f.plan(&CallCtx::unlimited(), &handle_into_ffi(Arc::new(MemHandle::new(data.to_vec()))), req).into_result()
}

fn request(mode: PlanMode, info: &TrackInfo, tags: Vec<Tag>) -> PlanRequest {
    PlanRequest {
        mode,
        info: info.clone(),
        tags: tags.into(),
        pictures: info.pictures.clone(),
        options: "{}".into(),
        extra: Vec::new().into(),
    }
}

/// The bytes a plan serves over `data`.
///
/// # Errors
/// A segment that is inconsistent or reaches past `data`.
pub fn assemble(plan: &Plan, data: &[u8]) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    for s in plan.segments.iter() {
        match s.kind {
            SegmentKind::LITERAL if s.bytes.len() as u64 == s.len => out.extend_from_slice(&s.bytes),
            SegmentKind::ORIGIN if s.offset + s.len <= data.len() as u64 => {
                out.extend_from_slice(&data[s.offset as usize..(s.offset + s.len) as usize]);
            }
            _ => {
                return Err(
                    format!("inconsistent segment {:?} (len {}) over {} bytes", s.kind, s.len, data.len()).into()
                )
            }
        }
    }
    Ok(out)
}

/// The trials of the format suite for `f`.
pub fn format_trials(f: FormatUnderTest) -> Vec<Trial> {
    let f = Arc::new(f);
    let mut out = Vec::new();
    let plugin = f.name.clone();
    let whole = |check: &str, ignored: bool, run: fn(&FormatUnderTest) -> Result<(), Failed>| {
        let f = f.clone();
        Trial::test(format!("format::{plugin}::{check}"), move || run(&f)).with_ignored_flag(ignored)
    };
    out.push(whole("has_fixtures", false, |f| check(!f.fixtures.is_empty(), || "no fixture files".into())));
    out.push(whole("an_empty_file_is_an_error", false, |f| match read(&f.format, &[]) {
        Ok(_) => Err("an empty file was read as audio".into()),
        Err(e) => check(e.kind != ErrorKind::PANIC, || format!("{e}")),
    }));
    out.push(whole("garbage_is_an_error_not_a_panic", false, |f| match read(&f.format, &[0x5Au8; 100_000]) {
        Ok(_) => Err("100 kB of garbage were read as audio".into()),
        Err(e) => check(e.kind != ErrorKind::PANIC, || format!("{e}")),
    }));
    out.push(whole("extensions_are_lower_case_without_dots", false, |f| {
        let exts: Vec<String> = f.format.extensions().into_iter().map(|e| e.into_string()).collect();
        check(!exts.is_empty() && exts.iter().all(|e| !e.contains('.') && *e == e.to_ascii_lowercase()), || {
            format!("{exts:?}")
        })
    }));
    out.push(whole("no_options_are_accepted", false, |f| match f.format.check_options("{}".into()).into_result() {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::UNSUPPORTED => Ok(()),
        Err(e) => Err(format!("`{{}}` refused: {e}").into()),
    }));
    for (i, fx) in f.fixtures.iter().enumerate() {
        let each = |check: &str, ignored: bool, run: fn(&FormatUnderTest, &Fixture) -> Result<(), Failed>| {
            let f = f.clone();
            Trial::test(format!("format::{plugin}::{}::{check}", fx.name), move || run(&f, &f.fixtures[i]))
                .with_ignored_flag(ignored)
        };
        out.push(each("probes_its_own_file", false, |f, fx| {
            let head = &fx.data[..fx.data.len().min(PROBE_HEAD_LEN)];
            check(f.format.probe(head.into(), fx.extension.as_str().into()) > 0, || "probe said 0".into())
        }));
        out.push(each("probes_higher_than_other_formats", f.rivals.is_empty(), |f, fx| {
            let head = &fx.data[..fx.data.len().min(PROBE_HEAD_LEN)];
            let mine = f.format.probe(head.into(), fx.extension.as_str().into());
            for (name, r) in &f.rivals {
                let theirs = r.probe(head.into(), fx.extension.as_str().into());
                check(theirs < mine, || format!("{name} probes {theirs}, this format {mine}"))?;
            }
            Ok(())
        }));
        out.push(each("read_finds_the_audio_inside_the_file", false, |f, fx| {
            let info = read(&f.format, &fx.data)?;
            check(info.audio_len > 0 && info.audio_offset + info.audio_len <= fx.data.len() as u64, || {
                format!("audio {}+{} in {} bytes", info.audio_offset, info.audio_len, fx.data.len())
            })
        }));
        out.push(each("read_gives_audio_properties", false, |f, fx| {
            let p = read(&f.format, &fx.data)?.props;
            check(p.sample_rate > 0 && p.channels > 0 && p.duration_ms > 0 && !p.codec.is_empty(), || format!("{p:?}"))
        }));
        out.push(each("read_finds_the_title", !fx.tagged, |f, fx| {
            let info = read(&f.format, &fx.data)?;
            check(info.tags.iter().any(|t| t.key == "title" && !t.value.is_empty()), || format!("{:?}", info.tags))
        }));
        out.push(each("passthrough_plan_is_the_whole_file", false, |f, fx| {
            let info = read(&f.format, &fx.data)?;
            let p = plan(&f.format, &fx.data, &request(PlanMode::PASSTHROUGH, &info, Vec::new()))?;
            check(assemble(&p, &fx.data)? == *fx.data, || "the passthrough plan serves other bytes".into())
        }));
        out.push(each(
            "synthesis_serves_an_edited_title_and_the_same_audio",
            !(f.caps.synthesis && fx.tagged),
            |f, fx| {
                let info = read(&f.format, &fx.data)?;
                let title = "Suite Title \u{2713} \u{65e5}\u{672c}";
                let mut tags = info.tags.to_vec();
                let t = tags.iter_mut().find(|t| t.key == "title").ok_or("no title tag")?;
                t.value = title.into();
                let p = plan(&f.format, &fx.data, &request(PlanMode::SYNTHESIS, &info, tags))?;
                let served = assemble(&p, &fx.data)?;
                check(served.len() as u64 == p.len(), || "the plan's length differs from its bytes".into())?;
                let back = read(&f.format, &served).map_err(|e| format!("the served file does not read back: {e}"))?;
                let titles: Vec<&str> =
                    back.tags.iter().filter(|t| t.key == "title").map(|t| t.value.as_str()).collect();
                check(titles.first() == Some(&title), || format!("titles read back: {titles:?}"))?;
                let a = &fx.data[info.audio_offset as usize..(info.audio_offset + info.audio_len) as usize];
                let b = served
                    .get(back.audio_offset as usize..(back.audio_offset + back.audio_len) as usize)
                    .ok_or("the served audio range is outside the served file")?;
                check(a == b, || "the served audio bytes differ from the original's".into())
            },
        ));
        out.push(each("truncations_never_panic_or_overrun", false, |f, fx| {
            let d = &fx.data;
            for cut in [0, 1, 4, 10, 64, 200, d.len() / 10, d.len() / 2, d.len().saturating_sub(1)] {
                match read(&f.format, &d[..cut.min(d.len())]) {
                    Ok(i) => check(i.audio_offset + i.audio_len <= cut as u64, || {
                        format!("cut at {cut}: audio past the end")
                    })?,
                    Err(e) => check(e.kind != ErrorKind::PANIC, || format!("cut at {cut}: {e}"))?,
                }
            }
            Ok(())
        }));
        out.push(each("corrupted_headers_never_panic", false, |f, fx| {
            let mut seed = 7u64;
            for round in 0..20 {
                let mut bad = fx.data.to_vec();
                for _ in 0..8 {
                    let r = lcg(&mut seed);
                    let i = r as usize % bad.len().clamp(1, 4096);
                    if let Some(b) = bad.get_mut(i) {
                        *b ^= (r >> 20) as u8 | 1;
                    }
                }
                match read(&f.format, &bad) {
                    Ok(i) => check(i.audio_offset + i.audio_len <= bad.len() as u64, || {
                        format!("round {round}: audio past the end")
                    })?,
                    Err(e) => check(e.kind != ErrorKind::PANIC, || format!("round {round}: {e}"))?,
                }
            }
            Ok(())
        }));
    }
    out
}

//! The root module every plugin library exports, and the export macro.
#![allow(unsafe_code, reason = "FFI: `#[export_root_module]` and the prefix-type glue of the root module")]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr},
    StableAbi,
};

use crate::error::PluginError;
use crate::format::FormatBox;
use crate::origin::OriginBox;
use crate::types::PluginInfo;

/// The ABI generation. Plugins built for another generation are refused at load with a
/// message naming both numbers. Within a generation, the root module and the trait
/// vtables only ever grow at the end (they are prefix types), so old plugins keep loading.
pub const ABI_VERSION: u32 = 2;

/// The ABI minor version: what was appended within the generation. A plugin of an older
/// minor loads and works; the host reports what it lacks (see [`PluginMod`]).
///
/// - 2.0: the generation's base (origins, formats, bit-flag [`OriginCaps`](crate::OriginCaps)).
/// - 2.1: host services ([`PluginMod::set_host`], [`FfiHost`](crate::FfiHost));
///   [`Format::check_options`](crate::Format::check_options).
/// - 2.2: [`Format::same_audio`](crate::Format::same_audio) (saves through a writable
///   mount).
pub const ABI_MINOR: u32 = 2; // abi-2.1: pub const ABI_MINOR: u32 = 1; // abi-2.0: pub const ABI_MINOR: u32 = 0;

/// [`ABI_VERSION`].[`ABI_MINOR`] as the version string `abi_stable` checks at load (the
/// major must match; any minor loads).
pub const ABI_VERSION_STRING: &str = "2.2.0"; // abi-2.1: pub const ABI_VERSION_STRING: &str = "2.1.0"; // abi-2.0: pub const ABI_VERSION_STRING: &str = "2.0.0";

/// The root module: a prefix type, so fields appended after `new_format` in later
/// versions do not break plugins built before them (the host sees them as absent:
/// their accessors return `None`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef, prefix_fields = PluginMod_Prefix)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin's [`ABI_VERSION`] at build time.
    pub abi_version: u32,
    /// Name, version, kinds and description.
    pub info: extern "C" fn() -> PluginInfo,
    /// Creates an origin from its manifest `[[origin]]` table, serialised as JSON; the
    /// host always includes `name` (the origin's name) and `kind` (this plugin's name).
    /// Plugins without origins return [`UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    pub new_origin: extern "C" fn(config: RStr<'_>) -> RResult<OriginBox, PluginError>,
    /// Creates the plugin's format. `config` is always `{}` (reserved): per-format
    /// options from the manifest's `[format.NAME]` arrive with every
    /// [`PlanRequest`](crate::PlanRequest) and are checked up front by
    /// [`Format::check_options`](crate::Format::check_options).
    /// Plugins without formats return [`UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    #[sabi(last_prefix_field)]
    pub new_format: extern "C" fn(config: RStr<'_>) -> RResult<FormatBox, PluginError>,
    // abi-since 2.1 {
    /// Since 2.1: receives the host's services, once, right after the plugin is loaded
    /// and before any other call. A host reads it as `Option` (`None` for a 2.0 plugin,
    /// whose messages then go to stderr).
    pub set_host: extern "C" fn(host: crate::host::HostBox),
    // abi-since 2.1 }
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "musefs_plugin";
    const NAME: &'static str = "musefs_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION_STRING);
}

/// Exports a plugin: the only item a plugin library needs besides its implementation.
///
/// ```ignore
/// musefs_plugin_api::export_plugin! {
///     name: "flac",
///     version: env!("CARGO_PKG_VERSION"),
///     description: "FLAC: Vorbis comments, pictures, STREAMINFO",
///     format: |config: &str| Ok(FlacFormat::new(config)?),
/// }
/// ```
///
/// `origin:` and/or `format:` take a factory `Fn(&str) -> PluginResult<T>` where `T`
/// implements [`Origin`](crate::Origin) or [`Format`](crate::Format); the string is the
/// plugin's configuration as JSON: for an origin its `[[origin]]` table, into which the
/// host always puts `name` (the origin's name in the manifest) and `kind` (the plugin's
/// name), so a factory that rejects unknown keys must accept those two; for a format
/// always `{}` (see [`PluginMod::new_format`]). Factories and every trait method are wrapped so a
/// panic becomes an error. The crate must be a `cdylib` and depend on `abi_stable`
/// directly (its export attribute refers to `::abi_stable`).
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr,
        description: $description:expr,
        $(origin: $origin:expr,)?
        $(format: $format:expr,)?
    ) => {
        #[::abi_stable::export_root_module]
        pub fn musefs_plugin_root_module() -> $crate::PluginModRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn info() -> $crate::PluginInfo {
                #[allow(unused_mut)]
                let mut kinds = $crate::PluginKinds(0);
                $( { let _ = stringify!($origin); kinds = kinds | $crate::PluginKinds::ORIGIN; } )?
                $( { let _ = stringify!($format); kinds = kinds | $crate::PluginKinds::FORMAT; } )?
                $crate::PluginInfo {
                    name: ($name).into(),
                    version: ($version).into(),
                    kinds,
                    description: ($description).into(),
                }
            }

            #[allow(unreachable_code)]
            extern "C" fn new_origin(
                config: ::abi_stable::std_types::RStr<'_>,
            ) -> ::abi_stable::std_types::RResult<$crate::OriginBox, $crate::PluginError> {
                $crate::guard(|| {
                    $( return ($origin)(config.as_str()).map($crate::origin_into_ffi); )?
                    let _ = config;
                    Err($crate::PluginError::unsupported(concat!("plugin ", $name, " provides no origin")))
                })
            }

            #[allow(unreachable_code)]
            extern "C" fn new_format(
                config: ::abi_stable::std_types::RStr<'_>,
            ) -> ::abi_stable::std_types::RResult<$crate::FormatBox, $crate::PluginError> {
                $crate::guard(|| {
                    $( return ($format)(config.as_str()).map($crate::format_into_ffi); )?
                    let _ = config;
                    Err($crate::PluginError::unsupported(concat!("plugin ", $name, " provides no format")))
                })
            }

            // abi-since 2.1 {
            extern "C" fn set_host(host: $crate::HostBox) {
                let _ = $crate::guard(|| {
                    $crate::host::install(host);
                    Ok(())
                });
            }
            // abi-since 2.1 }

            $crate::PluginMod {
                abi_version: $crate::ABI_VERSION,
                info,
                new_origin,
                new_format,
                set_host, // abi-2.0:
            }
            .leak_into_prefix()
        }
    };
}

//! The root module every plugin library exports, and the export macro.

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
pub const ABI_VERSION: u32 = 1;

/// [`ABI_VERSION`] as the version string `abi_stable` checks at load (major = generation).
pub const ABI_VERSION_STRING: &str = "1.0.0";

/// The root module: a prefix type, so fields appended after `new_format` in later
/// versions do not break plugins built before them (the host sees them as absent).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef, prefix_fields = PluginMod_Prefix)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin's [`ABI_VERSION`] at build time.
    pub abi_version: u32,
    /// Name, version, kinds and description.
    pub info: extern "C" fn() -> PluginInfo,
    /// Creates an origin from its manifest table, serialised as JSON.
    /// Plugins without origins return [`UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    pub new_origin: extern "C" fn(config: RStr<'_>) -> RResult<OriginBox, PluginError>,
    /// Creates a format from its options, serialised as JSON.
    /// Plugins without formats return [`UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    #[sabi(last_prefix_field)]
    pub new_format: extern "C" fn(config: RStr<'_>) -> RResult<FormatBox, PluginError>,
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
/// plugin's configuration as JSON. Factories and every trait method are wrapped so a
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

            $crate::PluginMod { abi_version: $crate::ABI_VERSION, info, new_origin, new_format }
                .leak_into_prefix()
        }
    };
}

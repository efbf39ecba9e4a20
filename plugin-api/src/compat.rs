//! The shapes of older minors of the current generation, frozen, so the host can check
//! an older plugin's root module against the layout it was really built with.
//!
//! abi_stable's load-time check accepts a library whose prefix types (root module,
//! `sabi_trait` vtables) have *at least* the host's fields: a plugin built for 2.0 fails
//! the check against the 2.1 shapes ("too many fields"), although prefix types are made
//! for exactly that case at run time (a missing root-module field reads as `None`, a
//! missing trait method runs its default body). So the host checks an older plugin
//! against that minor's frozen shapes here, then uses it through the current types.
//!
//! Each minor that changes a shape adds a module here with copies of the types that
//! changed (same names: abi_stable compares type names and package, not module paths).
//! The end-to-end tests `a_plugin_built_for_abi_2_0_loads_and_serves` and
//! `..._2_1_...` build a plugin from the fenced-off sources of each older minor and
//! load it, so a frozen copy that drifts fails there.
#![allow(unsafe_code, reason = "FFI: `#[sabi_trait]` and prefix-type glue of the frozen 2.0 shapes")]

/// ABI 2.0: the root module without `set_host`, formats without `check_options`.
pub mod v2_0 {
    use abi_stable::{
        declare_root_module_statics,
        library::RootModule,
        sabi_trait,
        sabi_types::VersionStrings,
        std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
        StableAbi,
    };

    use crate::error::PluginError;
    use crate::origin::{HandleBox, OriginBox};
    use crate::types::{CallCtx, Plan, PlanRequest, PluginInfo, TrackInfo};

    /// [`FfiFormat`](crate::FfiFormat) as of 2.0.
    #[sabi_trait]
    pub trait FfiFormat: Send + Sync {
        /// See [`Format::extensions`](crate::Format::extensions).
        fn extensions(&self) -> RVec<RString>;
        /// See [`Format::probe`](crate::Format::probe).
        fn probe(&self, head: RSlice<'_, u8>, extension: RStr<'_>) -> u32;
        /// See [`Format::read`](crate::Format::read).
        fn read(&self, ctx: &CallCtx, file: &HandleBox) -> RResult<TrackInfo, PluginError>;
        /// See [`Format::plan`](crate::Format::plan).
        #[sabi(last_prefix_field)]
        fn plan(&self, ctx: &CallCtx, file: &HandleBox, req: &PlanRequest) -> RResult<Plan, PluginError>;
    }

    /// [`FormatBox`](crate::FormatBox) as of 2.0.
    pub type FormatBox = FfiFormat_TO<'static, RBox<()>>;

    /// [`PluginMod`](crate::PluginMod) as of 2.0.
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef, prefix_fields = PluginMod_Prefix)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        /// See [`PluginMod::abi_version`](crate::PluginMod::abi_version).
        pub abi_version: u32,
        /// See [`PluginMod::info`](crate::PluginMod::info).
        pub info: extern "C" fn() -> PluginInfo,
        /// See [`PluginMod::new_origin`](crate::PluginMod::new_origin).
        pub new_origin: extern "C" fn(config: RStr<'_>) -> RResult<OriginBox, PluginError>,
        /// See [`PluginMod::new_format`](crate::PluginMod::new_format).
        #[sabi(last_prefix_field)]
        pub new_format: extern "C" fn(config: RStr<'_>) -> RResult<FormatBox, PluginError>,
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "musefs_plugin";
        const NAME: &'static str = "musefs_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.0.0");
    }
}

// abi-since 2.2 {
/// ABI 2.1: formats without `same_audio`.
pub mod v2_1 {
    use abi_stable::{
        declare_root_module_statics,
        library::RootModule,
        sabi_trait,
        sabi_types::VersionStrings,
        std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
        StableAbi,
    };

    use crate::error::PluginError;
    use crate::origin::{HandleBox, OriginBox};
    use crate::types::{CallCtx, Plan, PlanRequest, PluginInfo, TrackInfo};

    /// [`FfiFormat`](crate::FfiFormat) as of 2.1.
    #[sabi_trait]
    pub trait FfiFormat: Send + Sync {
        /// See [`Format::extensions`](crate::Format::extensions).
        fn extensions(&self) -> RVec<RString>;
        /// See [`Format::probe`](crate::Format::probe).
        fn probe(&self, head: RSlice<'_, u8>, extension: RStr<'_>) -> u32;
        /// See [`Format::read`](crate::Format::read).
        fn read(&self, ctx: &CallCtx, file: &HandleBox) -> RResult<TrackInfo, PluginError>;
        /// See [`Format::plan`](crate::Format::plan).
        #[sabi(last_prefix_field)]
        fn plan(&self, ctx: &CallCtx, file: &HandleBox, req: &PlanRequest) -> RResult<Plan, PluginError>;
        /// See [`Format::check_options`](crate::Format::check_options).
        fn check_options(&self, options: RStr<'_>) -> RResult<(), PluginError> {
            let _ = options;
            RResult::RErr(PluginError::unsupported("ABI 2.0"))
        }
    }

    /// [`FormatBox`](crate::FormatBox) as of 2.1.
    pub type FormatBox = FfiFormat_TO<'static, RBox<()>>;

    /// [`PluginMod`](crate::PluginMod) as of 2.1.
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef, prefix_fields = PluginMod_Prefix)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        /// See [`PluginMod::abi_version`](crate::PluginMod::abi_version).
        pub abi_version: u32,
        /// See [`PluginMod::info`](crate::PluginMod::info).
        pub info: extern "C" fn() -> PluginInfo,
        /// See [`PluginMod::new_origin`](crate::PluginMod::new_origin).
        pub new_origin: extern "C" fn(config: RStr<'_>) -> RResult<OriginBox, PluginError>,
        /// See [`PluginMod::new_format`](crate::PluginMod::new_format).
        #[sabi(last_prefix_field)]
        pub new_format: extern "C" fn(config: RStr<'_>) -> RResult<FormatBox, PluginError>,
        /// See [`PluginMod::set_host`](crate::PluginMod::set_host).
        pub set_host: extern "C" fn(host: crate::host::HostBox),
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "musefs_plugin";
        const NAME: &'static str = "musefs_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.1.0");
    }
}
// abi-since 2.2 }

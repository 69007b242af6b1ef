//! Helpers for the Prometheus metrics every component exports.

/// Implements `prometheus_client::encoding::EncodeLabelValue` for a fieldless enum with the given
/// snake_case names (the Prometheus convention; the derive would use the variant names as they are).
///
/// ```
/// #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
/// enum Reason { SlowReader, Idle }
/// switchyard_cluster::snake_case_labels!(Reason { SlowReader => "slow_reader", Idle => "idle" });
/// ```
#[macro_export]
macro_rules! snake_case_labels {
    ($type:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl ::prometheus_client::encoding::EncodeLabelValue for $type {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> ::std::result::Result<(), ::std::fmt::Error> {
                ::std::fmt::Write::write_str(encoder, match self { $(Self::$variant => $name),+ })
            }
        }
    };
}

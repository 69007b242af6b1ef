//! Building the Redis locator from the `--locator` URL.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use switchyard_cluster::locator::Locator;
use switchyard_cluster::redis_locator::{RedisLocator, RedisLocatorConfig};

pub(crate) async fn connect(
    url: &str,
    prefix: &str,
    registry: &mut Registry,
) -> anyhow::Result<Arc<dyn Locator>> {
    let mut config = RedisLocatorConfig::new(url);
    config.prefix = prefix.to_owned();
    let shown = config.redacted_url();
    let locator = RedisLocator::connect(config, registry)
        .await
        .map_err(|error| anyhow::anyhow!("cannot use the Redis locator at {shown}: {error}"))?;
    Ok(Arc::new(locator))
}

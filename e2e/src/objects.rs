//! Creating the Kubernetes objects a node component needs (CoreDNS, the NetworkPolicy controller) from JSON:
//! typed first, so a mistake in the harness's own manifest is a setup error that names the component.

use kube::Api;
use kube::api::PostParams;
use serde::de::DeserializeOwned;

use crate::Error;

/// `value` as a `T`; a setup error naming `component` when it is not one.
pub(crate) fn object<T: DeserializeOwned>(component: &str, value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::Setup(format!("{component} object: {e}")))
}

/// Creates `value` through `api`; one that exists already (a restarted harness step) is fine.
pub(crate) async fn create<K>(component: &str, api: Api<K>, value: serde_json::Value) -> Result<(), Error>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = object(component, value)?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(Error::kube(format!("create a {component} object"))(error)),
    }
}

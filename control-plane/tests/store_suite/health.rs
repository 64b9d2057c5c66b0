//! Health cases: the store answers its readiness check.

use super::*;

store_cases!(ping_answers,);

async fn ping_answers(store: DynStore) {
    store.ping().await.expect("ping");
}

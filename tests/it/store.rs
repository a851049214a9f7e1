//! Store integration tests: every behavioural case runs against SQLite (a temp file) and
//! Postgres (a fresh database per test on the server named by
//! `PORTCULLIS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! A missing Postgres server fails the Postgres tests; nothing is skipped. `faults.rs`
//! adds Postgres faults (terminated backends, refused connections) over the store API
//! and over a real server.

mod events;
mod faults;
pub mod harness;
mod runs;
mod text;
mod threads;

/// Generates one `#[tokio::test]` per case and database: `store::sqlite::<case>` and
/// `store::postgres::<case>`.
macro_rules! on_both_databases {
    ($($module:ident::$case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = super::harness::TestDb::sqlite();
                    super::$module::$case(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = super::harness::TestDb::postgres().await;
                    super::$module::$case(&db).await;
                }
            )*
        }
    };
}

on_both_databases!(
    threads::migrations_are_idempotent,
    threads::new_thread_and_ack_ids,
    threads::thread_list_is_newest_first,
    threads::repeated_client_id_is_idempotent,
    threads::racing_client_ids_create_one_message,
    threads::threads_are_isolated_between_users,
    events::seq_is_gapless_under_concurrent_appends,
    events::events_after_filters_and_limits,
    runs::finish_run_stores_answer_and_completion,
    runs::interrupted_runs_are_closed_at_boot,
    events::data_survives_reopen,
    events::concurrent_runs_on_many_threads_keep_seqs_and_answers,
    runs::refused_finish_does_not_fail_concurrent_writes,
    events::a_rejected_write_does_not_fail_the_others,
    runs::appends_need_a_running_run_of_the_thread,
    text::nul_in_client_text_is_refused_and_stores_nothing,
    text::nul_in_an_answer_is_stored_as_a_replacement_character,
    runs::abandoned_runs_are_closed_by_the_sweep,
    runs::appends_racing_their_finish_never_follow_it,
);

#[tokio::test]
async fn bad_urls_are_clear_errors_without_secrets() {
    events::bad_urls_are_clear_errors_without_secrets().await;
}

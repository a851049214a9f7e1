//! The thread's earlier turns reach the model as context, bounded by `history_messages`.

use super::{agent, ask, start};

#[tokio::test]
async fn earlier_turns_of_the_thread_are_sent_newest_kept() {
    let env = start("", &agent("gpt", "echo", "history_messages = 2")).await;
    let mut c = env.server.user("alice").await;
    let (ack, _) = ask(&mut c, "gpt", "my cat is Tom", None).await;
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    ask(&mut c, "gpt", "my dog is Rex", Some(&thread)).await;
    let (_, events) = ask(&mut c, "gpt", "who are my pets?", Some(&thread)).await;
    assert_eq!(events.last().unwrap()["status"], "ok");
    let requests = env.model.requests();
    assert_eq!(requests.len(), 3);
    let messages = requests[2].body["messages"].as_array().unwrap().clone();
    let turns: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // System, the last two stored messages (the second question and its answer), then
    // the message being answered; the first turn is beyond history_messages.
    assert_eq!(turns.len(), 4, "{turns:?}");
    assert_eq!(turns[0].0, "system");
    assert_eq!(turns[1], ("user".into(), "my dog is Rex".into()));
    assert_eq!(
        turns[2],
        ("assistant".into(), "You said: my dog is Rex".into())
    );
    assert_eq!(turns[3], ("user".into(), "who are my pets?".into()));
}

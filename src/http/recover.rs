//! The one place rejections become HTTP answers: every error a client sees is JSON
//! `{"error_code": …, "message": …}` with a stable code.

use std::convert::Infallible;

use crate::refusal::error_reply;
use crate::wire::ErrorCode;
use warp::Rejection;
use warp::http::StatusCode;
use warp::reject::Reject;

/// An error with its status, code and message, raised by handlers as a rejection.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
}

impl Reject for ApiError {}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Turns any rejection into a JSON error.
pub async fn recover(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = err.find::<ApiError>() {
        return Ok(error_reply(e.status, e.code, &e.message));
    }
    if err.is_not_found() {
        return Ok(error_reply(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound.as_str(),
            "no route here; `portcullis routes --env <env>` lists them",
        ));
    }
    if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed.as_str(),
            "this path does not answer that method",
        ));
    }
    if let Some(e) = err.find::<warp::filters::body::BodyDeserializeError>() {
        return Ok(error_reply(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest.as_str(),
            &format!("request body: {e}"),
        ));
    }
    if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge.as_str(),
            "request body too large",
        ));
    }
    if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        return Ok(error_reply(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadQuery.as_str(),
            &e.to_string(),
        ));
    }
    tracing::warn!(rejection = ?err, "unhandled rejection");
    Ok(error_reply(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest.as_str(),
        "the request could not be handled",
    ))
}

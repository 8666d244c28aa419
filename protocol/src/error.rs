//! The error frames of protocol V2: a code, one space, a human text. Only the failures of FIN,
//! REQ and TOUCH keep the connection open; every other error closes it after the frame is sent.

use std::fmt;

/// Every error code nsqd sends on a V2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadProtocol,
    Invalid,
    BadBody,
    BadTopic,
    BadChannel,
    BadMessage,
    PubFailed,
    MpubFailed,
    DpubFailed,
    SubFailed,
    FinFailed,
    ReqFailed,
    TouchFailed,
    IdentifyFailed,
    AuthFirst,
    AuthFailed,
    Unauthorized,
    AuthDisabled,
    AuthError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        Self::BadProtocol,
        Self::Invalid,
        Self::BadBody,
        Self::BadTopic,
        Self::BadChannel,
        Self::BadMessage,
        Self::PubFailed,
        Self::MpubFailed,
        Self::DpubFailed,
        Self::SubFailed,
        Self::FinFailed,
        Self::ReqFailed,
        Self::TouchFailed,
        Self::IdentifyFailed,
        Self::AuthFirst,
        Self::AuthFailed,
        Self::Unauthorized,
        Self::AuthDisabled,
        Self::AuthError,
    ];

    /// The code as sent, `E_INVALID` and so on.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadProtocol => "E_BAD_PROTOCOL",
            Self::Invalid => "E_INVALID",
            Self::BadBody => "E_BAD_BODY",
            Self::BadTopic => "E_BAD_TOPIC",
            Self::BadChannel => "E_BAD_CHANNEL",
            Self::BadMessage => "E_BAD_MESSAGE",
            Self::PubFailed => "E_PUB_FAILED",
            Self::MpubFailed => "E_MPUB_FAILED",
            Self::DpubFailed => "E_DPUB_FAILED",
            Self::SubFailed => "E_SUB_FAILED",
            Self::FinFailed => "E_FIN_FAILED",
            Self::ReqFailed => "E_REQ_FAILED",
            Self::TouchFailed => "E_TOUCH_FAILED",
            Self::IdentifyFailed => "E_IDENTIFY_FAILED",
            Self::AuthFirst => "E_AUTH_FIRST",
            Self::AuthFailed => "E_AUTH_FAILED",
            Self::Unauthorized => "E_UNAUTHORIZED",
            Self::AuthDisabled => "E_AUTH_DISABLED",
            Self::AuthError => "E_AUTH_ERROR",
        }
    }

    /// The code of an error frame's text (`"E_INVALID ..."`), if it names one.
    pub fn parse(text: &[u8]) -> Option<ErrorCode> {
        let code = text.split(|&b| b == b' ').next()?;
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == code)
    }

    /// Whether nsqd closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        !matches!(self, Self::FinFailed | Self::ReqFailed | Self::TouchFailed)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to send to the client as an error frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub text: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self { code, text: text.into() }
    }

    pub fn invalid(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, text)
    }

    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// The error frame's data: `"E_CODE text"`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_message_failures_keep_the_connection() {
        let kept: Vec<_> = ErrorCode::ALL.into_iter().filter(|c| !c.is_fatal()).collect();
        assert_eq!(kept, [ErrorCode::FinFailed, ErrorCode::ReqFailed, ErrorCode::TouchFailed]);
    }

    #[test]
    fn codes_round_trip_through_their_text() {
        for code in ErrorCode::ALL {
            let error = ProtocolError::new(code, "some text");
            assert_eq!(ErrorCode::parse(&error.to_bytes()), Some(code));
            assert!(error.to_string().starts_with(&format!("{} ", code.as_str())));
        }
        assert_eq!(ErrorCode::parse(b"E_NOPE x"), None);
    }
}

//! The one error table. Every failure a client can see has a [`Code`]; this table says what
//! it is on gRPC (a status code, with an [`ErrorDetail`](crate::v1::ErrorDetail) in the
//! status details) and on the AWS JSON API (the `__type` and the HTTP status).

use prost::Message;

macro_rules! codes {
    ($($name:ident => $ns:expr, $grpc:ident, $http:literal;)*) => {
        /// An error code: AWS's exception name where AWS has one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($name),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The AWS exception name (`ExecutionDoesNotExist`).
            pub fn name(self) -> &'static str {
                match self { $(Code::$name => stringify!($name)),* }
            }

            /// The namespace AWS puts before `#` in `__type`.
            fn namespace(self) -> &'static str {
                match self { $(Code::$name => $ns),* }
            }

            pub fn grpc(self) -> tonic::Code {
                match self { $(Code::$name => tonic::Code::$grpc),* }
            }

            /// The HTTP status on the AWS JSON API.
            pub fn http_status(self) -> u16 {
                match self { $(Code::$name => $http),* }
            }

            pub fn from_name(name: &str) -> Option<Code> {
                match name { $(stringify!($name) => Some(Code::$name),)* _ => None }
            }
        }
    };
}

const SFN: &str = "com.amazonaws.swf.service.v2.model";

codes! {
    ActivityAlreadyExists => SFN, AlreadyExists, 400;
    ActivityDoesNotExist => SFN, NotFound, 400;
    ActivityLimitExceeded => SFN, ResourceExhausted, 400;
    ActivityWorkerLimitExceeded => SFN, ResourceExhausted, 400;
    ConflictException => SFN, FailedPrecondition, 400;
    ExecutionAlreadyExists => SFN, AlreadyExists, 400;
    ExecutionDoesNotExist => SFN, NotFound, 400;
    ExecutionLimitExceeded => SFN, ResourceExhausted, 400;
    ExecutionNotRedrivable => SFN, FailedPrecondition, 400;
    InvalidArn => SFN, InvalidArgument, 400;
    InvalidDefinition => SFN, InvalidArgument, 400;
    InvalidEncryptionConfiguration => SFN, InvalidArgument, 400;
    InvalidExecutionInput => SFN, InvalidArgument, 400;
    InvalidLoggingConfiguration => SFN, InvalidArgument, 400;
    InvalidName => SFN, InvalidArgument, 400;
    InvalidOutput => SFN, InvalidArgument, 400;
    InvalidToken => SFN, InvalidArgument, 400;
    InvalidTracingConfiguration => SFN, InvalidArgument, 400;
    MissingRequiredParameter => SFN, InvalidArgument, 400;
    ResourceNotFound => SFN, NotFound, 400;
    ServiceQuotaExceededException => SFN, ResourceExhausted, 400;
    StateMachineAlreadyExists => SFN, AlreadyExists, 400;
    StateMachineDeleting => SFN, FailedPrecondition, 400;
    StateMachineDoesNotExist => SFN, NotFound, 400;
    StateMachineLimitExceeded => SFN, ResourceExhausted, 400;
    StateMachineTypeNotSupported => SFN, InvalidArgument, 400;
    TaskDoesNotExist => SFN, NotFound, 400;
    TaskTimedOut => SFN, FailedPrecondition, 400;
    TooManyTags => SFN, InvalidArgument, 400;
    ValidationException => "com.amazon.coral.validate", InvalidArgument, 400;
    UnknownOperationException => "com.amazon.coral.service", Unimplemented, 400;
    SerializationException => "com.amazon.coral.service", InvalidArgument, 400;
    ThrottlingException => "com.amazon.coral.availability", ResourceExhausted, 400;
    // Authentication (SigV4) on the AWS JSON API.
    MissingAuthenticationTokenException => "com.amazon.coral.service", Unauthenticated, 400;
    UnrecognizedClientException => "com.amazon.coral.service", Unauthenticated, 400;
    InvalidSignatureException => "com.amazon.coral.service", Unauthenticated, 400;
    IncompleteSignatureException => "com.amazon.coral.service", Unauthenticated, 400;
    // Authorization: the principal's policies do not allow the call.
    AccessDeniedException => "com.amazon.coral.service", PermissionDenied, 400;
    InternalFailure => "com.amazon.coral.service", Internal, 500;
    ServiceUnavailable => "com.amazon.coral.service", Unavailable, 503;
    // Trellis: the node does not lead the group; `leader_hint` names the leader.
    NotLeader => "trellis", Unavailable, 503;
}

impl Code {
    /// The `__type` of an AWS JSON error body.
    pub fn aws_type(self) -> String {
        format!("{}#{}", self.namespace(), self.name())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An error as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub leader_hint: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            leader_hint: None,
        }
    }

    pub fn not_leader(leader: Option<u64>) -> Self {
        ApiError {
            code: Code::NotLeader,
            message: "this node does not lead the group; retry on the leader".into(),
            leader_hint: leader,
        }
    }

    /// The gRPC status, with an `ErrorDetail` in its details.
    pub fn to_status(&self) -> tonic::Status {
        let detail = crate::v1::ErrorDetail {
            code: self.code.name().to_string(),
            message: self.message.clone(),
            leader_hint: self.leader_hint.unwrap_or(0),
        };
        tonic::Status::with_details(
            self.code.grpc(),
            format!("{}: {}", self.code, self.message),
            detail.encode_to_vec().into(),
        )
    }

    /// Reads an error back from a status (any status: one without details becomes
    /// `InternalFailure` or `ServiceUnavailable`).
    pub fn from_status(s: &tonic::Status) -> ApiError {
        if let Ok(d) = crate::v1::ErrorDetail::decode(s.details()) {
            if let Some(code) = Code::from_name(&d.code) {
                return ApiError {
                    code,
                    message: d.message,
                    leader_hint: (d.leader_hint != 0).then_some(d.leader_hint),
                };
            }
        }
        let code = match s.code() {
            tonic::Code::Unavailable => Code::ServiceUnavailable,
            tonic::Code::InvalidArgument => Code::ValidationException,
            tonic::Code::Unimplemented => Code::UnknownOperationException,
            _ => Code::InternalFailure,
        };
        ApiError::new(code, s.message())
    }

    /// The AWS JSON error body: `{"__type": ..., "message": ...}`.
    pub fn aws_body(&self) -> String {
        let esc = |s: &str| {
            let mut out = String::with_capacity(s.len() + 2);
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        };
        format!(
            "{{\"__type\":\"{}\",\"message\":\"{}\"}}",
            self.code.aws_type(),
            esc(&self.message)
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for &code in Code::ALL {
            let e = ApiError {
                code,
                message: format!("about {code}"),
                leader_hint: Some(3),
            };
            let back = ApiError::from_status(&e.to_status());
            assert_eq!(back, e);
            assert_eq!(Code::from_name(code.name()), Some(code));
            assert!(!code.aws_type().contains(':'), "SDKs cut __type at ':'");
        }
    }

    #[test]
    fn aws_shapes() {
        let e = ApiError::new(
            Code::ExecutionDoesNotExist,
            "Execution Does Not Exist: 'arn:aws:states:us-east-1:1:execution:a:\"b\"'",
        );
        assert_eq!(
            e.aws_body(),
            r#"{"__type":"com.amazonaws.swf.service.v2.model#ExecutionDoesNotExist","message":"Execution Does Not Exist: 'arn:aws:states:us-east-1:1:execution:a:\"b\"'"}"#
        );
        assert_eq!(Code::InternalFailure.http_status(), 500);
        assert_eq!(
            Code::ValidationException.aws_type(),
            "com.amazon.coral.validate#ValidationException"
        );
    }

    #[test]
    fn statuses_without_details() {
        let e = ApiError::from_status(&tonic::Status::unavailable("down"));
        assert_eq!(e.code, Code::ServiceUnavailable);
        assert_eq!(e.message, "down");
    }
}

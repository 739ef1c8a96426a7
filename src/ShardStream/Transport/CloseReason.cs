namespace ShardStream.Transport;

/// <summary>What ended a connection, as a code a program can match on (the text is for people).</summary>
internal enum CloseCode
{
    /// <summary>This side closed it on purpose, in order (after a goodbye, or a shutdown).</summary>
    Closed,

    /// <summary>This side ended it at once (its owner gave up on it, replaced it, or stopped).</summary>
    Aborted,

    /// <summary>This side's failure detector took the other side for dead.</summary>
    TimedOut,

    /// <summary>This side cut the other side off for taking what was queued for it too slowly.</summary>
    TooSlow,

    /// <summary>The other side said goodbye.</summary>
    Goodbye,

    /// <summary>The other side closed the connection without a goodbye (or in the middle of a frame).</summary>
    RemoteClosed,

    /// <summary>The other side sent a frame it may not send, or a malformed one.</summary>
    ProtocolViolation,

    /// <summary>The other side sent data that failed verification.</summary>
    BadData,

    /// <summary>A send or a receive failed (a reset, a broken pipe).</summary>
    ConnectionLost,

    /// <summary>A bug on this side (a handler threw) ended it; <see cref="CloseReason.Exception"/> says which.</summary>
    InternalError,
}

/// <summary>
/// Why a connection ended: a <see cref="CloseCode"/> to match on, the text for logs and users, and
/// the exception behind it, if any.
/// </summary>
internal sealed record CloseReason(CloseCode Code, string Text, Exception? Exception = null)
{
    /// <summary>The other side broke the protocol or sent what failed verification: it is to blame.</summary>
    public bool IsViolation => Code is CloseCode.ProtocolViolation or CloseCode.BadData;

    public override string ToString() => Text;
}

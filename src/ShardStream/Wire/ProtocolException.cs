namespace ShardStream.Wire;

/// <summary>
/// The remote side broke the protocol (malformed, oversized or unexpected frame, unknown version).
/// The connection that carried it is ended with this message as the reason.
/// </summary>
public sealed class ProtocolException(string message) : Exception(message);

using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using ShardStream.Wire;

namespace ShardStream.Cli;

/// <summary>The one-line reasons the CLI gives for a command line it cannot use.</summary>
internal static class CliErrors
{
    /// <summary>The largest decimal value any flag takes: seconds past it overflow the timers, multiples of the stream rate mean nothing.</summary>
    internal const double MaxDecimal = 1_000_000;

    /// <summary>
    /// Checks every decimal option of <paramref name="command"/> and its subcommands. A comma is
    /// refused: the parser reads numbers with the invariant culture, which takes ',' as a thousands
    /// separator, so "--upload 1,5" (one and a half, as many locales write it) would be read as 15.
    /// So are NaN and infinities, which the parser takes as numbers, and values past
    /// <see cref="MaxDecimal"/> (a TimeSpan or a budget would overflow further on, with a stack
    /// trace instead of one line).
    /// </summary>
    public static void CheckDecimals(Command command)
    {
        foreach (var option in command.Options)
        {
            var type = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
            if (type != typeof(double)) continue;
            option.Validators.Add(result =>
            {
                if (result.Tokens.Count == 0) return;
                string value = result.Tokens[^1].Value;
                if (result.Tokens.Any(t => t.Value.Contains(',')))
                    result.AddError($"{option.Name}: '{value}' is not a number");
                else if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double number) && !double.IsFinite(number))
                    result.AddError($"{option.Name}: '{value}' is not a number");
                else if (Math.Abs(number) > MaxDecimal)
                    result.AddError($"{option.Name}: '{value}' is out of range (at most {MaxDecimal.ToString("N0", CultureInfo.InvariantCulture)})");
            });
        }
        foreach (var sub in command.Subcommands) CheckDecimals(sub);
    }

    /// <summary>The options that take a HOST:PORT address, in every command.</summary>
    private static readonly HashSet<string> AddressOptions = ["--listen", "--connect", "--advertise", "--http", "--rtmp", "--rtmp-play"];

    /// <summary>
    /// Checks the HOST:PORT of every address option of <paramref name="command"/> and its
    /// subcommands when the command line is parsed, so that a malformed one is refused before
    /// anything starts, and the error names the flag ("--rtmp: 'x' is not an address of the form
    /// HOST:PORT") instead of leaving the user to guess which of three addresses it was.
    /// </summary>
    public static void CheckAddresses(Command command)
    {
        foreach (var option in command.Options)
        {
            if (!AddressOptions.Contains(option.Name) || option.ValueType != typeof(string)) continue;
            option.Validators.Add(result =>
            {
                if (result.Tokens.Count == 0) return;
                try
                {
                    ShardStream.Transport.Endpoint.Parse(result.Tokens[^1].Value);
                }
                catch (FormatException e)
                {
                    result.AddError($"{option.Name}: {e.Message}");
                }
            });
        }
        foreach (var sub in command.Subcommands) CheckAddresses(sub);
    }

    /// <summary>
    /// A parse error in our words where the parser's would name a .NET type (a value that is not a
    /// number: "--upload: 'abc' is not a number" instead of "... as expected type
    /// 'System.Nullable`1[System.Double]'"), else the parser's message on one line.
    /// </summary>
    public static string Describe(ParseError error)
    {
        var option = error.SymbolResult switch
        {
            OptionResult o => o,
            ArgumentResult { Parent: OptionResult o } => o,
            _ => null,
        };
        if (option is not null && option.Tokens.Count > 0)
        {
            var type = Nullable.GetUnderlyingType(option.Option.ValueType) ?? option.Option.ValueType;
            string value = option.Tokens[^1].Value;
            string? expected = type switch
            {
                _ when type == typeof(int) || type == typeof(long) => long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _) ? null : "a whole number",
                _ when type == typeof(double) => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _) ? null
                    : double.TryParse(value.Replace(',', '.'), NumberStyles.Float, CultureInfo.InvariantCulture, out var meant) ? $"a number (decimals take a dot: {meant.ToString(CultureInfo.InvariantCulture)})"
                    : "a number",
                _ when type == typeof(bool) => bool.TryParse(value, out _) ? null : "true or false",
                _ => null,
            };
            if (expected is not null) return $"{option.Option.Name}: '{value}' is not {expected}";
            // A value outside a fixed list (AcceptOnlyFromAmong): the parser's message names no flag.
            int among = error.Message.IndexOf("Must be one of:", StringComparison.Ordinal);
            if (among >= 0)
            {
                var allowed = error.Message[(among + "Must be one of:".Length)..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                return $"{option.Option.Name}: '{value}' is not one of {string.Join(", ", allowed.Select(a => a.Trim('\'')))}";
            }
        }
        return string.Join(' ', error.Message.Split((char[])['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    /// <summary>
    /// The one line for a failure a user caused: the library's message, except for an address that
    /// answered with no ShardStream frame, where the line says which of a node's addresses to give
    /// (the library names none of this tool's flags).
    /// </summary>
    public static string Line(Exception e) => e is NotShardStreamException foreign
        ? $"{foreign.Address} does not speak the ShardStream protocol; is it a node's overlay port (its -l), not its --http or --rtmp one?"
          + (foreign.Service == ForeignService.Unknown ? "" : $" {Capitalised(NotShardStreamException.Named(foreign.Service))} answered:") + $" {foreign.Detail}"
        : e.Message;

    private static string Capitalised(string words) => words.Length == 0 ? words : char.ToUpperInvariant(words[0]) + words[1..];
}

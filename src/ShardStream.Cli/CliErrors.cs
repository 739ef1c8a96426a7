using System.CommandLine.Parsing;
using System.Globalization;

namespace ShardStream.Cli;

/// <summary>The one-line reasons the CLI gives for a command line it cannot use.</summary>
internal static class CliErrors
{
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
                _ when type == typeof(double) => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _) ? null : "a number",
                _ when type == typeof(bool) => bool.TryParse(value, out _) ? null : "true or false",
                _ => null,
            };
            if (expected is not null) return $"{option.Option.Name}: '{value}' is not {expected}";
        }
        return string.Join(' ', error.Message.Split((char[])['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }
}

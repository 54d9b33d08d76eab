// A small CSV reader for the sweep's results.csv (RFC 4180: comma-separated,
// fields optionally in double quotes with "" for a quote, LF or CRLF line ends).
// Errors name the file, the line and the column.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace llm::sweep {

struct CsvTable {
  std::string path;                              // for error messages
  std::vector<std::string> header;               // column names, in file order
  std::vector<std::vector<std::string>> rows;    // each has header.size() fields
  std::vector<std::size_t> line;                 // 1-based file line where each row starts

  // Index of a column, or -1 when absent.
  int column(const std::string& name) const;
  // Index of a column; throws naming the file, the column and the columns it has.
  int require_column(const std::string& name) const;
  // "FILE: line L (row R of the data)" for error messages.
  std::string where(std::size_t row) const;
  // The cell as a finite number; throws naming file, line, column and cell when it is
  // not one. Empty cells give std::nullopt (throw instead when `required`).
  std::optional<double> number(std::size_t row, int col, bool required) const;
};

// Reads a whole CSV file whose first line is the header. Throws std::runtime_error
// when the file cannot be read, the header is empty or repeats a name, a quote is
// unterminated, or a row has a different number of fields than the header.
CsvTable read_csv_table(const std::string& path);

// Parses CSV text (the same rules); `path` only names the source in errors.
CsvTable parse_csv_table(const std::string& text, const std::string& path);

}  // namespace llm::sweep

#include "sweep/csv.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace llm::sweep {

namespace {

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

}  // namespace

int CsvTable::column(const std::string& name) const {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int>(i);
  return -1;
}

int CsvTable::require_column(const std::string& name) const {
  const int c = column(name);
  if (c >= 0) return c;
  std::string have;
  for (const auto& h : header) have += (have.empty() ? "" : ",") + h;
  throw std::runtime_error(path + ": the header has no column '" + name + "' (it has: " + have +
                           "); write the file with llm-sweep, whose header includes '" + name + "'");
}

std::string CsvTable::where(std::size_t row) const {
  return path + ": line " + std::to_string(line.at(row)) + " (data row " + std::to_string(row + 1) + ")";
}

std::optional<double> CsvTable::number(std::size_t row, int col, bool required) const {
  const std::string cell = trim(rows.at(row).at(static_cast<std::size_t>(col)));
  const std::string& name = header.at(static_cast<std::size_t>(col));
  if (cell.empty()) {
    if (!required) return std::nullopt;
    throw std::runtime_error(where(row) + ", column '" + name + "': the cell is empty but a number is needed");
  }
  double v = 0;
  const char* b = cell.data();
  const char* e = b + cell.size();
  if (*b == '+') ++b;  // from_chars does not take a leading '+'
  const auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p != e || !std::isfinite(v))
    throw std::runtime_error(where(row) + ", column '" + name + "': '" + cell +
                             "' is not a finite number; fix or remove this row");
  return v;
}

CsvTable parse_csv_table(const std::string& text, const std::string& path) {
  CsvTable t;
  t.path = path;
  std::vector<std::vector<std::string>> records;
  std::vector<std::size_t> record_line;
  std::vector<std::string> fields;
  std::string field;
  bool in_quotes = false, field_started = false, record_has_content = false;
  std::size_t line = 1, start_line = 1, quote_line = 0;
  auto end_field = [&] {
    fields.push_back(field);
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    if (record_has_content || fields.size() > 1) {
      records.push_back(fields);
      record_line.push_back(start_line);
    }
    fields.clear();
    record_has_content = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (!record_has_content && fields.empty() && !field_started) start_line = line;
    if (c == '"' && !field_started) {
      in_quotes = field_started = record_has_content = true;
      quote_line = line;
    } else if (c == ',') {
      record_has_content = true;
      end_field();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      // CRLF: the '\n' ends the record
    } else if (c == '\n') {
      end_record();
      ++line;
    } else {
      field += c;
      field_started = record_has_content = true;
    }
  }
  if (in_quotes)
    throw std::runtime_error(path + ": line " + std::to_string(quote_line) +
                             ": a quoted field is never closed (missing '\"')");
  if (record_has_content || !field.empty()) end_record();
  if (records.empty()) throw std::runtime_error(path + ": the file is empty; it needs a header line");
  t.header = records.front();
  for (auto& h : t.header) h = trim(h);
  for (std::size_t i = 0; i < t.header.size(); ++i) {
    if (t.header[i].empty())
      throw std::runtime_error(path + ": line " + std::to_string(record_line[0]) + ": header column " +
                               std::to_string(i + 1) + " has no name");
    for (std::size_t j = 0; j < i; ++j)
      if (t.header[j] == t.header[i])
        throw std::runtime_error(path + ": line " + std::to_string(record_line[0]) + ": the header names column '" +
                                 t.header[i] + "' twice");
  }
  for (std::size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != t.header.size())
      throw std::runtime_error(path + ": line " + std::to_string(record_line[r]) + ": " +
                               std::to_string(records[r].size()) + " fields but the header has " +
                               std::to_string(t.header.size()) + "; every row needs one field per column");
    t.rows.push_back(std::move(records[r]));
    t.line.push_back(record_line[r]);
  }
  return t;
}

CsvTable read_csv_table(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the results file (does it exist? pass --results FILE)");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": read error");
  return parse_csv_table(ss.str(), path);
}

}  // namespace llm::sweep

// Shared plumbing of the command-line tools: Boost.Program_options parsing
// with --help, and one place that turns exceptions into "tool: error: ..."
// and an exit code (2 for usage errors, 1 for everything else).
#pragma once
#include <boost/program_options.hpp>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <string>

#include "launch/train_config.h"

namespace llm::cli {

// Parses argv into `opts`; returns false after printing help. Throws UsageError.
inline bool parse(int argc, char** argv, const boost::program_options::options_description& opts,
                  boost::program_options::variables_map& vm, const std::vector<std::string>& required) {
  namespace po = boost::program_options;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see --help)");
  }
  for (const auto& r : required)
    if (!vm.count(r)) throw UsageError("--" + r + " is required (see --help)");
  return true;
}

inline int run(const char* tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool, e.what());
    return 1;
  }
}

}  // namespace llm::cli

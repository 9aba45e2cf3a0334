# Reads the {{TRIAL}} analysis package: every <dataset>.csv of this zip, with the column types,
# variable labels and code lists of codebook.csv. Base R only (R >= 4.0), no package needed.
#
#   source("read_{{TRIAL}}.R")                  # in the folder the zip was extracted to
#   trial <- read_package()                     # a list of data frames, one per dataset
#   trial <- read_package(language = "zh")      # labels and factor labels in Chinese
#   str(trial$subjects); attr(trial$subjects$sex, "label")
#
# Types: text -> character (coded text -> factor with the code list's labels, levels in the
# code list's order), integer -> integer, decimal -> numeric, date -> Date, datetime -> POSIXct
# in UTC, boolean (1/0) -> logical. An empty cell is NA. Each column's label is its "label"
# attribute (shown by RStudio's View, kept by haven/labelled if you use them).

read_package <- function(dir = ".", language = c("en", "zh")) {
  language <- match.arg(language)
  read_utf8 <- function(file, ...) {
    utils::read.csv(file.path(dir, file), fileEncoding = "UTF-8-BOM", check.names = FALSE,
                    stringsAsFactors = FALSE, ...)
  }
  codebook <- read_utf8("codebook.csv", colClasses = "character", na.strings = character(0))
  pick <- function(english, chinese) {
    if (language == "zh") ifelse(nzchar(chinese), chinese, english) else english
  }
  classes <- c(text = "character", integer = "integer", decimal = "numeric", date = "character",
               datetime = "character", boolean = "integer")
  datasets <- list()
  for (name in unique(codebook$dataset)) {
    entries <- codebook[codebook$dataset == name, , drop = FALSE]
    variables <- entries[!duplicated(entries$variable), , drop = FALSE]
    column_classes <- stats::setNames(unname(classes[variables$type]), variables$variable)
    data <- read_utf8(paste0(name, ".csv"), colClasses = column_classes, na.strings = "",
                      encoding = "UTF-8")
    for (i in seq_len(nrow(variables))) {
      variable <- variables[i, ]
      x <- data[[variable$variable]]
      if (variable$type == "date") {
        x <- as.Date(x, format = "%Y-%m-%d")
      } else if (variable$type == "datetime") {
        x <- as.POSIXct(x, format = "%Y-%m-%dT%H:%M:%SZ", tz = "UTC")
      } else if (variable$type == "boolean") {
        x <- as.logical(x)
      } else if (nzchar(variable$code_list)) {
        codes <- entries[entries$variable == variable$variable, , drop = FALSE]
        x <- factor(x, levels = codes$code, labels = pick(codes$code_label, codes$code_label_zh))
      }
      label <- pick(variable$label, variable$label_zh)
      if (nzchar(variable$unit)) label <- paste0(label, " [", variable$unit, "]")
      attr(x, "label") <- label
      data[[variable$variable]] <- x
    }
    datasets[[name]] <- data
  }
  datasets
}

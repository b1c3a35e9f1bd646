// The start page at /: start a new document (readable random id) or open one by name.

import { isValidDocId, normalizeDocId, randomDocId, docPath, recentDocs } from './docid.js'

const $ = (id) => document.getElementById(id)

function open (id) {
  location.assign(docPath(id))
}

$('new-doc').addEventListener('click', () => open(randomDocId()))

const input = $('doc-input')
const error = $('open-error')

$('open-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const id = normalizeDocId(input.value)
  if (!id) {
    showError('Type a document name, or start a new document above.')
  } else if (!isValidDocId(id)) {
    showError('Use only letters, digits, . _ - (up to 128 characters).')
  } else {
    open(id)
  }
})

input.addEventListener('input', () => { error.hidden = true })

function showError (message) {
  error.textContent = message
  error.hidden = false
  input.focus()
}

const recent = recentDocs()
if (recent.length > 0) {
  $('recent').hidden = false
  $('recent-list').replaceChildren(...recent.map((id) => {
    const item = document.createElement('li')
    const link = document.createElement('a')
    link.href = docPath(id)
    link.textContent = id
    item.append(link)
    return item
  }))
}

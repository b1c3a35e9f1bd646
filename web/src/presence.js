// The "who is here" list: one avatar per person in the document's awareness,
// yourself first. Rendered into a <ul>; names show beside avatars on wide screens.

import { initials } from './identity.js'

/** Avatars shown before the rest are summarised as "+N". */
const MAX_SHOWN = 6

/**
 * Keeps `list` in step with `awareness`.
 * @param {HTMLUListElement} list
 * @param {import('y-protocols/awareness').Awareness} awareness
 */
export function showPresence (list, awareness) {
  const render = () => {
    const self = awareness.clientID
    const people = []
    awareness.getStates().forEach((state, clientId) => {
      if (state && state.user && typeof state.user.name === 'string') {
        people.push({ clientId, self: clientId === self, ...state.user })
      }
    })
    people.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name) || a.clientId - b.clientId)

    // Past MAX_SHOWN people the bar would overflow (on a phone first): summarise the rest.
    const shown = people.length > MAX_SHOWN ? people.slice(0, MAX_SHOWN - 1) : people
    const hidden = people.slice(shown.length)
    list.replaceChildren(...shown.map((p) => {
      const item = document.createElement('li')
      item.className = 'person' + (p.self ? ' self' : '')
      item.dataset.clientId = String(p.clientId)
      item.title = p.self ? `${p.name} (you)` : p.name
      const avatar = document.createElement('span')
      avatar.className = 'avatar'
      avatar.style.background = safeColor(p.color)
      avatar.textContent = initials(p.name)
      const name = document.createElement('span')
      name.className = 'person-name'
      name.textContent = p.self ? `${p.name} (you)` : p.name
      item.append(avatar, name)
      return item
    }))
    if (hidden.length > 0) {
      const more = document.createElement('li')
      more.className = 'person more'
      more.title = hidden.map((p) => p.name).join(', ')
      more.textContent = `+${hidden.length}`
      list.append(more)
    }
    list.dataset.count = String(people.length)
    list.classList.toggle('crowded', people.length > 3)
  }
  awareness.on('change', render)
  render()
}

/** Only #rrggbb colours reach the page's styles; anything else becomes grey. */
export function safeColor (color) {
  return typeof color === 'string' && /^#[0-9a-fA-F]{6}$/.test(color) ? color : '#8a8f98'
}
